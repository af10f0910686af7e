"""Duplicate merging on the live stream: one decision in, its case link(s) out.

The state of one merge key (``"<district>|<merge class>"``, see ``processors.merge``) is a
small JSON document: the open cases, and the reports linked recently, so a decision
delivered again after a restart gets the same link instead of being counted twice.
Decisions are keyed by district on their topics, so every report of a key arrives on one
partition, and the consumer that owns the partition owns the key's state.

``CaseLinker`` holds the states of the keys one consumer owns. It is rebuilt, not restored:
the stage replays the decisions of the last ``lookback`` before its committed offsets
(``processors.case_stage``), which gives back exactly the open cases, since no case stays
open longer than the longest window plus the grace period.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from processors.merge import (
    Case,
    CaseIndex,
    CaseState,
    MergePolicy,
    MergeStateError,
    case_key,
    case_place,
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
    value: dict[str, Any] | None  # the key's new state value
    # Reports linked earlier to a case this report showed to be part of its own: their
    # new links (same ``linked_at``), so the warehouse's cases add up without chasing ids.
    relinks: tuple[CaseLink, ...] = ()


def _link(
    decision: DispatchDecision,
    case_id: str,
    key: str | None,
    merged: bool,
    reporters: int,
    absorbed: tuple[str, ...],
    now: datetime,
    case: Case | None = None,
) -> CaseLink:
    level, place = (case_place(case) if case is not None else None) or ("", "")
    if case is None and decision.place:
        level, place = "name", decision.place
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
        district=decision.district,
        code=decision.code,
        event_name=decision.event_name,
        place_level=level,
        place=place[:200],
        reported_at=decision.received_at.isoformat(),  # type: ignore[arg-type]
    )


def merge_key(decision: DispatchDecision, policy: MergePolicy) -> str | None:
    """The state's key, or None when the report cannot meet others: no district (its
    decision is not partitioned with the district's), or no usable time or code."""
    if not decision.district:
        return None
    return case_key(report_from_decision(decision), policy)


def _entry(link: CaseLink) -> list[Any]:
    """What ``recent`` keeps of a link: enough to give it again, or to re-link it."""
    at = int(link.reported_at.timestamp()) if link.reported_at else None
    return [link.case_id, link.merged, link.reporters, link.place_level, link.place,
            link.code, link.event_name, at]


def _from_entry(
    entry: list[Any], decision_like: CaseLink, input_id: str, now: datetime
) -> CaseLink:
    case_id, merged, reporters, level, place, code, event_name, at = (entry + [None] * 8)[:8]
    return decision_like.model_copy(update={
        "input_id": input_id, "case_id": case_id, "merged": bool(merged),
        "reporters": int(reporters), "place_level": level or "", "place": place or "",
        "code": code or "", "event_name": event_name or "", "absorbed": (),
        "reported_at": datetime.fromtimestamp(at, UTC) if at is not None else None,
        "linked_at": now,
    })


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
        fresh = _link(decision, seen[0], key, bool(seen[1]), int(seen[2]), (), now)
        return CaseStep(_from_entry(seen, fresh, decision.input_id, now), key, value)
    try:
        state = CaseState.from_json((value or {}).get("state"))
    except MergeStateError:
        state = CaseState()  # a state this version cannot read: start the key afresh
    step = index.step(report_from_decision(decision), state)
    case = step.state.case(step.case_id)
    reporters = case.reports if case is not None else 1
    link = _link(decision, step.case_id, key, step.merged, reporters, step.absorbed, now, case)
    relinks: list[CaseLink] = []
    if step.absorbed:
        gone = set(step.absorbed)
        for other_id, entry in list(recent.items()):
            if entry[0] not in gone:
                continue
            moved = _from_entry(entry, link, other_id, now).model_copy(update={
                "case_id": step.case_id, "merged": True, "reporters": reporters,
                "place_level": link.place_level, "place": link.place, "relinked": True,
            })
            recent[other_id] = _entry(moved)
            relinks.append(moved)
    recent[decision.input_id] = _entry(link)
    if len(recent) > RECENT_LINKS:
        for old in list(recent)[: len(recent) - RECENT_LINKS]:
            del recent[old]
    return CaseStep(link, key, {"state": step.state.to_json(), "recent": recent},
                    tuple(relinks))


@dataclass
class CaseLinker:
    """The open cases of the keys one consumer owns, and the links its decisions get.

    Not thread-safe: one consumer task calls it."""

    index: CaseIndex
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def link(self, decision: DispatchDecision, now: datetime) -> list[CaseLink]:
        """The decision's link first, then the re-links its case merge caused."""
        key = merge_key(decision, self.index.policy)
        step = link_decision(decision, self.values.get(key) if key else None, self.index, now)
        if step.key is not None and step.value is not None:
            self.values[step.key] = step.value
        return [step.link, *step.relinks]

    def link_all(
        self,
        decisions: Iterable[DispatchDecision],
        now: datetime,
        on_error: Callable[[DispatchDecision, Exception], None] | None = None,
    ) -> list[CaseLink]:
        """Every decision's links. A decision the merge logic fails on (a bug) becomes its
        own case, reported to ``on_error``: one report unmerged, not a stalled stream."""
        links: list[CaseLink] = []
        for decision in decisions:
            try:
                links.extend(self.link(decision, now))
            except Exception as exc:  # noqa: BLE001 - any bug: the report stays its own case
                if on_error is not None:
                    on_error(decision, exc)
                links.append(_link(decision, decision.input_id, None, False, 1, (), now))
        return links

    def forget(self) -> None:
        """Drop every key (partitions were reassigned: the stage rebuilds what it owns)."""
        self.values.clear()
