"""Duplicate merging on the live stream: one decision in, its case link out.

The state of one merge key (``"<district>|<merge class>"``, see ``processors.merge``) is a
JSON document kept in a Faust table: the open cases, and the reports already linked
recently, so a decision delivered again after a restart gets the same link instead of
being counted twice. Decisions are keyed by district on their topics, so every report
of a key arrives on one partition and the table shard that holds its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processors.merge import (
    CaseIndex,
    CaseState,
    MergePolicy,
    MergeStateError,
    case_key,
    report_from_decision,
)
from schemas.records import CaseLink, DispatchDecision

# Links remembered per key for repeats: a restart repeats at most the uncommitted tail
# (about a second), and every table update rewrites the whole value, so keep it small.
RECENT_LINKS = 64


@dataclass(frozen=True, slots=True)
class CaseStep:
    link: CaseLink
    key: str | None  # None: the report stays its own case (nothing to keep)
    value: dict[str, Any] | None  # the key's new table value


def _link(
    decision: DispatchDecision,
    case_id: str,
    key: str | None,
    merged: bool,
    reporters: int,
    absorbed: tuple[str, ...],
    now: datetime,
) -> CaseLink:
    return CaseLink(
        kind="case_link",
        schema_version=1,
        input_id=decision.input_id,
        case_id=case_id,
        merge_key=key or "",
        merged=merged,
        reporters=reporters,
        absorbed=absorbed,
        linked_at=now.isoformat(),  # type: ignore[arg-type]
    )


def merge_key(decision: DispatchDecision, policy: MergePolicy) -> str | None:
    """The table key, or None when the report cannot meet others: no district (its
    decision is not partitioned with the district's), or no usable time or code."""
    if not decision.district:
        return None
    return case_key(report_from_decision(decision), policy)


def link_decision(
    decision: DispatchDecision,
    value: dict[str, Any] | None,
    index: CaseIndex,
    now: datetime,
) -> CaseStep:
    """The decision's case, and the key's next state (``value`` is the current one)."""
    key = merge_key(decision, index.policy)
    if key is None:
        return CaseStep(_link(decision, decision.input_id, None, False, 1, (), now), None, None)
    recent: dict[str, list[Any]] = dict((value or {}).get("recent", {}))
    seen = recent.get(decision.input_id)
    if seen is not None:  # delivered again: the same link, nothing counted twice
        case_id, merged, reporters = seen
        return CaseStep(_link(decision, case_id, key, merged, reporters, (), now), key, value)
    try:
        state = CaseState.from_json((value or {}).get("state"))
    except MergeStateError:
        state = CaseState()  # a state this version cannot read: start the key afresh
    step = index.step(report_from_decision(decision), state)
    case = next((c for c in step.state.cases if c.case_id == step.case_id), None)
    reporters = case.reports if case is not None else 1
    recent[decision.input_id] = [step.case_id, step.merged, reporters]
    if len(recent) > RECENT_LINKS:
        for old in list(recent)[: len(recent) - RECENT_LINKS]:
            del recent[old]
    return CaseStep(
        _link(decision, step.case_id, key, step.merged, reporters, step.absorbed, now),
        key,
        {"state": step.state.to_json(), "recent": recent},
    )
