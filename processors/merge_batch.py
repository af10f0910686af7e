"""Duplicate merging over a set of reports, offline: the live ``CaseIndex`` fed in time
order, so that the result does not depend on the input's order.

``assign_in_order`` is the step loop ``citystream merge`` streams a file through
(``streams.batch_merge``, which builds each report from its live dispatch decision);
``read_reports`` and ``assign_cases`` are the in-memory path the merge evaluation uses to
compare readings of the same reports (simulator truth, address analysis, a classifier).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from processors.dispatch import PlaceReader
from processors.merge import CITY_TZ, CaseIndex, CaseState, MergePolicy, MergeReport, follow

if TYPE_CHECKING:
    from processors.dispatch import Dispatcher
    from schemas.domain import Domain

Classify = Callable[[list[str]], list[str]]

CLASSIFY_BATCH = 128


@dataclass(frozen=True, slots=True)
class BatchInput:
    id: str
    text: str
    at: datetime | None
    channel: str


def read_reports(
    inputs: Sequence[BatchInput],
    analyser: PlaceReader,
    classify: Classify | None,
    places: PlaceReader | None = None,
) -> list[MergeReport]:
    """Each input as a merge report: its place from address analysis, its code from the
    classifier ("" without one: the policy's unclassified class, place and time only).
    ``places``: a second reader asked for the named place where the first found none (the
    live cascade runs NER only when the district is missing; NER finds most 小区 and
    landmark names the gazetteer alone does not)."""
    texts = [i.text for i in inputs]
    codes: list[str] = [""] * len(inputs)
    if classify is not None:
        codes = []
        for start in range(0, len(texts), CLASSIFY_BATCH):
            chunk = texts[start : start + CLASSIFY_BATCH]
            got = classify(chunk)
            if len(got) != len(chunk):
                raise ValueError(f"the classifier answered {len(got)} codes for {len(chunk)}")
            codes += [c or "" for c in got]
    reports = []
    for item, code in zip(inputs, codes, strict=True):
        address = analyser.analyse(item.text)
        place = address.place
        if place is None and places is not None and item.text.strip():
            place = places.analyse(item.text).place
        reports.append(
            MergeReport(
                report_id=item.id,
                at=item.at,
                code=code,
                district=address.district,
                street=address.street,
                road=address.road,
                place=place,
                text=item.text,
                channel=item.channel,
            )
        )
    return reports


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


def dispatcher_classifier(dispatcher: Dispatcher, now: datetime | None = None) -> Classify:
    """The dispatcher's code for each text (the code it would dispatch under, router and
    rule included); "" where no model answered."""
    from processors.dispatch import DispatchRequest

    received = now or datetime(2000, 1, 1, tzinfo=CITY_TZ)

    def classify(texts: list[str]) -> list[str]:
        requests = [
            DispatchRequest(
                input_id=f"merge-{i}",
                input_kind="citizen_appeal",
                text=text,
                received_at=received,
            )
            for i, text in enumerate(texts)
        ]
        return [d.code for d in dispatcher.decide_batch(requests)]

    return classify
