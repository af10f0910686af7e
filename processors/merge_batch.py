"""``citystream merge``: duplicate merging over a file of reports, offline.

Input lines ``{"id", "text", "time", "channel"}`` in any order; one output ``{"id",
"case_id"}`` per input, in input order. Places come from address analysis (the live
analyser), codes from a classifier (the CLI passes the dispatcher's); the cases from the
same ``CaseIndex`` as the live agent, fed in time order so that the result does not
depend on the input's order.

A line that cannot be read, or a report without a usable time, is its own case (never
dropped, so outputs stay aligned with inputs). A time without a UTC offset is read as
Qingdao time (+08:00): hotline systems log local time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from processors.dispatch import PlaceReader
from processors.merge import CITY_TZ, CaseIndex, CaseState, MergePolicy, MergeReport, follow

if TYPE_CHECKING:
    from processors.dispatch import Dispatcher
    from schemas.domain import Domain

Classify = Callable[[list[str]], list[str]]

# Enough of a report for its place and its problem; a 100 kB paste is cut here.
MAX_TEXT_CHARS = 2000
CLASSIFY_BATCH = 128


@dataclass(frozen=True, slots=True)
class BatchInput:
    id: str
    text: str
    at: datetime | None
    channel: str


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time, aware (naive read as +08:00); None when missing or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=CITY_TZ)
    try:
        at.astimezone(UTC)  # an offset that pushes it outside the calendar (year 1 at +08:00)
    except (OverflowError, OSError, ValueError):
        return None
    return at


def parse_input(item: object, line_no: int) -> BatchInput:
    """Whatever the line holds, an input: a missing id becomes ``line-N``."""
    if not isinstance(item, Mapping):
        return BatchInput(f"line-{line_no}", "", None, "")
    given = item.get("id")
    text = item.get("text")
    channel = item.get("channel")
    return BatchInput(
        id=str(given) if given is not None else f"line-{line_no}",
        text=text[:MAX_TEXT_CHARS] if isinstance(text, str) else "",
        at=parse_time(item.get("time")),
        channel=channel if isinstance(channel, str) else "",
    )


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


def assign_cases(reports: Sequence[MergeReport], policy: MergePolicy) -> list[str]:
    """Case ids for reports, in their order: the index sees them by time (then id), the
    way a stream without late arrivals would; cases found later to be one are one."""
    index = CaseIndex(policy)
    order = sorted(
        range(len(reports)),
        key=lambda i: (_seconds(reports[i].at), reports[i].report_id, i),
    )
    states: dict[str, CaseState] = {}
    merged_into: dict[str, str] = {}
    out = [""] * len(reports)
    for i in order:
        report = reports[i]
        key = index.key(report)
        if key is None:
            out[i] = report.report_id
            continue
        step = index.step(report, states.get(key, CaseState()))
        states[key] = step.state
        out[i] = step.case_id
        for absorbed in step.absorbed:
            merged_into[absorbed] = step.case_id
    # A batch can relabel what a stream has already published: every report gets the id
    # of the case its own case ended in.
    return [follow(merged_into, c) for c in out]


def _seconds(at: datetime | None) -> float:
    # Reports without a time go last (they are their own cases anyway).
    return at.timestamp() if at is not None else float("inf")


def merge_batch(
    items: Sequence[object],
    analyser: PlaceReader,
    classify: Classify | None,
    policy: MergePolicy,
    places: PlaceReader | None = None,
) -> list[tuple[str, str]]:
    """(id, case id) for every input, in input order."""
    inputs = [parse_input(item, n) for n, item in enumerate(items, start=1)]
    reports = read_reports(inputs, analyser, classify, places)
    return list(zip((i.id for i in inputs), assign_cases(reports, policy), strict=True))


def decode_lines(lines: Iterable[str]) -> list[object]:
    """Decoded JSON lines; a line that is not JSON becomes None (its own case). Blank lines
    are skipped."""
    out: list[object] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            out.append(None)
    return out


def merge_file(
    source: TextIO,
    sink: TextIO,
    analyser: PlaceReader,
    classify: Classify | None,
    policy: MergePolicy,
    places: PlaceReader | None = None,
) -> tuple[int, int]:
    """The command's I/O around ``merge_batch``: (reports, cases)."""
    pairs = merge_batch(decode_lines(source), analyser, classify, policy, places)
    for report_id, case_id in pairs:
        sink.write(json.dumps({"id": report_id, "case_id": case_id}, ensure_ascii=False) + "\n")
    return len(pairs), len({c for _, c in pairs})


def simplify_table() -> dict[int, str]:
    """Traditional -> simplified characters (jionlp's table, as address analysis reads
    it), for ``MergePolicy.char_map``."""
    from processors.gazetteer import load_lexicon

    return {ord(t): s for t, s in load_lexicon().traditional.items() if len(t) == 1}


def batch_policy(domain: Domain) -> MergePolicy:
    """The default policy with the character table loaded."""
    return MergePolicy.default(domain, char_map=simplify_table())


def run_merge(
    source: TextIO,
    sink: TextIO,
    domain: Domain,
    classify: Classify | None,
    policy: MergePolicy | None = None,
) -> tuple[int, int]:
    """``citystream merge`` after its arguments: the live analyser (and its NER reader for
    places), the default policy. Returns (reports, cases)."""
    from processors.address import live_analyser

    analyser = live_analyser(domain)
    return merge_file(
        source, sink, analyser, classify, policy or batch_policy(domain), analyser.full
    )


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
