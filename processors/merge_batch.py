"""Duplicate merging over a set of reports, offline: the live ``CaseIndex`` fed in time
order, so that the result does not depend on the input's order.

``assign_in_order`` is the step loop ``citystream merge`` streams a file through
(``streams.batch_merge``, which builds each report from its live dispatch decision);
``assign_cases`` is the same over a list in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from processors.merge import CaseIndex, CaseState, MergePolicy, MergeReport, follow

if TYPE_CHECKING:
    from schemas.domain import Domain

def time_order(report: MergeReport) -> tuple[float, str]:
    """The order a batch feeds the index in: by time, then id (the way a stream without
    late arrivals would see them); reports without a time last."""
    return _seconds(report.at), report.report_id


def assign_in_order(
    reports: Iterable[tuple[int, MergeReport]], policy: MergePolicy
) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(position, case id, case ids it absorbed) for reports given in ``time_order``: the
    live index's steps. State stays bounded (one entry per district and merge class, each
    holding its open cases), so a file of any size streams through."""
    index = CaseIndex(policy)
    states: dict[str, CaseState] = {}
    for position, report in reports:
        key = index.key(report)
        if key is None:
            yield position, report.report_id, ()
            continue
        step = index.step(report, states.get(key, CaseState()))
        states[key] = step.state
        yield position, step.case_id, step.absorbed


def assign_cases(reports: Sequence[MergeReport], policy: MergePolicy) -> list[str]:
    """Case ids for reports, in their order; cases found later to be one are one."""
    order = sorted(range(len(reports)), key=lambda i: (*time_order(reports[i]), i))
    merged_into: dict[str, str] = {}
    out = [""] * len(reports)
    for i, case_id, absorbed in assign_in_order(((i, reports[i]) for i in order), policy):
        out[i] = case_id
        for gone in absorbed:
            merged_into[gone] = case_id
    # A batch can relabel what a stream has already published: every report gets the id
    # of the case its own case ended in.
    return [follow(merged_into, c) for c in out]


def _seconds(at: datetime | None) -> float:
    # Reports without a time go last (they are their own cases anyway).
    return at.timestamp() if at is not None else float("inf")


def simplify_table() -> dict[int, str]:
    """Traditional -> simplified characters (jionlp's table, as address analysis reads
    it), for ``MergePolicy.char_map``."""
    from processors.gazetteer import load_lexicon

    return {ord(t): s for t, s in load_lexicon().traditional.items() if len(t) == 1}


def batch_policy(domain: Domain) -> MergePolicy:
    """The default policy with the character table loaded."""
    return MergePolicy.default(domain, char_map=simplify_table())
