"""``citystream similar``: past cases and queries read from JSON Lines, and the answer
written back (pure: records in, rows, searches or reasons out; the command's I/O is in
``streams.similar_cli``).

A past case ``{"id", "text", "time"}`` (optional ``code``, ``district``, ``resolution``,
``hours_to_close``) becomes the row the live path stores for a decided report
(``processors.similar.case_embedding_row``): its text as ingest stores it (normalised and
masked, so it is embedded as a live report's text is), its time as the report's. Where the
live row keeps how a case was handled (the unit) it keeps the ``resolution``; how long the
case took is kept as the live path keeps it, as a verdict in ``dispatch_feedback_log``
given ``hours_to_close`` after the report, so ``similar_cases_sql`` (the board's search)
reads both back unchanged.

A query ``{"id", "text"}`` (optional filters ``code``, ``district``, ``since``) becomes its
text and the ``SearchFilters`` the live search takes; the answer is ``{"id", "similar":
[{"id", "score"}, ...]}``, best first, each with the past case's ``resolution`` and
``hours_to_close`` when it had them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np
from pydantic import TypeAdapter, ValidationError

from processors.ingest import normalise_text
from processors.pii import mask
from processors.similar import (
    CODE_RE,
    EMBEDDINGS_LOG,
    CaseFacts,
    PastCase,
    SearchFilters,
    case_embedding_row,
    quote_string,
)
from schemas.errors import RecordError
from schemas.records import Timestamp, utc_naive
from streams.batch import InputLine, Rejected

CASE_FIELDS = ("id", "text", "time")
QUERY_FIELDS = ("id", "text")
# What a past case's row says it is: not a live report (citizen_appeal, city_event).
PAST_CASE_KIND = "past_case"
# The verdict a closed past case is recorded with: the live vocabulary's "the handling
# stood" (dispatch_feedback's verdicts are confirmed or corrected).
CLOSED_VERDICT = "confirmed"
FEEDBACK_LOG = "dispatch_feedback_log"
# An id is a past case's key in the warehouse; short enough that a lookup of a chunk's
# ids (``stored_ids_sql``) stays far below a server's query size limit (256 KiB on 18.16).
MAX_ID_CHARS = 100
ID_LOOKUP = 500  # ids per lookup query
REPEATED_ID = "id: repeated (an earlier line gave this id; the first is kept)"
TIME_FORM = "ISO 8601 with a UTC offset, e.g. 2026-03-01T20:00:00+08:00"
NOTHING_TO_EMBED = "text: nothing to embed (no letters or digits), it would match nothing"

_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp)


@dataclass(frozen=True, slots=True)
class PastCaseLine:
    """A past case as it is stored."""

    id: str
    text: str  # as ingest stores a text: normalised, masked
    reported_at: datetime  # naive UTC
    code: str | None
    district: str | None
    resolution: str | None
    hours_to_close: float | None


@dataclass(frozen=True, slots=True)
class QueryLine:
    id: str
    text: str  # normalised and masked, as the past cases' texts
    filters: SearchFilters


_Parsed = TypeVar("_Parsed", PastCaseLine, QueryLine)


class _Refused(ValueError):
    """A field's value the command cannot take (the line's reason)."""


def _id(record: dict[str, Any]) -> str:
    value = record["id"]  # a string: the frame checked the required fields
    if not value or len(value) > MAX_ID_CHARS or any(ord(c) < 32 or c == "\x7f" for c in value):
        raise _Refused(f"id: must be 1 to {MAX_ID_CHARS} characters, no control characters")
    return value


def _stored_text(record: dict[str, Any], max_chars: int) -> str:
    try:
        return mask(normalise_text(record["text"], max_chars, "text")).text
    except RecordError as err:
        raise _Refused(err.reason) from err


def _optional_str(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(f"{name}: must be a string, got {type(value).__name__}")
    return value


def _time(value: Any, name: str) -> datetime:
    """An ISO 8601 time with a UTC offset, as the wire records take it; naive UTC."""
    try:
        return utc_naive(_TIMESTAMP.validate_python(value))
    except ValidationError as exc:
        why = exc.errors()[0]["msg"].removeprefix("Value error, ")
        if "ISO 8601" not in why and "between" not in why:  # pydantic's own words: add the form
            why += f" ({TIME_FORM})"
        raise _Refused(f"{name}: {why}") from exc


def _code(record: dict[str, Any]) -> str | None:
    code = _optional_str(record, "code")
    if code is not None and not CODE_RE.match(code):
        raise _Refused(f"code: {code!r} is not an event code (a letter and two digits, A01)")
    return code


def _district(record: dict[str, Any]) -> str | None:
    district = _optional_str(record, "district")
    if district is not None:
        try:
            SearchFilters(district=district)  # the live search's rule for a district
        except ValueError as exc:
            raise _Refused(f"district: {exc}") from exc
    return district


def _hours(record: dict[str, Any], reported_at: datetime) -> float | None:
    value = record.get("hours_to_close")
    if value is None:
        return None
    # Comparisons, not math.isfinite: NaN and infinity fail them, and a 400-digit JSON
    # integer does not overflow them. Beyond 1e6 hours (114 years) is past 2106 anyway.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e6:
        raise _Refused("hours_to_close: must be a number of hours, 0 or more")
    # The closing time is stored as a verdict's time: it must fit a DateTime as well.
    _time((reported_at + timedelta(hours=value)).isoformat() + "+00:00", "hours_to_close")
    return float(value)


def parse_case(line: InputLine, max_chars: int) -> PastCaseLine | Rejected:
    """The past case of a line of the cases file, or why it cannot be one."""
    record = line.record
    try:
        reported_at = _time(record["time"], "time")
        return PastCaseLine(
            id=_id(record),
            text=_stored_text(record, max_chars),
            reported_at=reported_at,
            code=_code(record),
            district=_district(record),
            resolution=_optional_str(record, "resolution"),
            hours_to_close=_hours(record, reported_at),
        )
    except _Refused as why:
        return Rejected(str(why))


def parse_query(line: InputLine, max_chars: int) -> QueryLine | Rejected:
    """A query's text and the live search's filters, or why the line cannot be one."""
    record = line.record
    try:
        query_id, text, code = _id(record), _stored_text(record, max_chars), _code(record)
        since = record.get("since")
        return QueryLine(query_id, text, SearchFilters(
            code=code,
            district=_district(record),
            since=None if since is None else _time(since, "since"),
        ))
    except _Refused as why:
        return Rejected(str(why))


def embed_parsed(
    parsed: Sequence[_Parsed | Rejected], embed: Callable[[list[str]], np.ndarray]
) -> list[tuple[_Parsed, np.ndarray] | Rejected]:
    """Each parsed line with its vector (one ``embed`` call for the chunk, which the
    embedder batches for the model), in order; a zero vector (a text without n-grams,
    e.g. only emoji) is refused: it scores 0 against everything, so it could neither find
    nor be found."""
    good = [item for item in parsed if not isinstance(item, Rejected)]
    vectors = iter(embed([item.text for item in good]) if good else ())
    out: list[tuple[_Parsed, np.ndarray] | Rejected] = []
    for item in parsed:
        if isinstance(item, Rejected):
            out.append(item)
            continue
        vector = next(vectors)
        out.append((item, vector) if np.any(vector) else Rejected(NOTHING_TO_EMBED))
    return out


def refuse_repeats(
    cases: Sequence[PastCaseLine | Rejected], stored: Callable[[list[str]], set[str]]
) -> list[PastCaseLine | Rejected]:
    """The chunk's cases with a repeated id refused (the first line keeps it): repeats
    within the chunk, and ids ``stored`` (given up to ``ID_LOOKUP`` ids, the stored ones
    among them) says earlier chunks stored."""
    ids = list(dict.fromkeys(c.id for c in cases if isinstance(c, PastCaseLine)))
    seen: set[str] = set()
    for lo in range(0, len(ids), ID_LOOKUP):
        seen |= stored(ids[lo : lo + ID_LOOKUP])
    out: list[PastCaseLine | Rejected] = []
    for case in cases:
        if isinstance(case, PastCaseLine):
            if case.id in seen:
                out.append(Rejected(REPEATED_ID))
                continue
            seen.add(case.id)
        out.append(case)
    return out


def case_row(case: PastCaseLine, vector: np.ndarray, model_version: str) -> dict[str, Any]:
    """The ``case_embeddings_log`` row of a past case: its own case, its resolution where
    a live row keeps the unit that handled it, its time as the report's and the
    decision's."""
    facts = CaseFacts(
        case_id=case.id,
        input_id=case.id,
        input_kind=PAST_CASE_KIND,
        code=case.code or "",
        event_name="",
        district=case.district or "",
        street="",
        unit=case.resolution or "",
        auto=False,
        text=case.text,
        reported_at=case.reported_at,
        decided_at=case.reported_at,
    )
    return case_embedding_row(facts, vector, model_version)


def closing_row(case: PastCaseLine) -> dict[str, Any] | None:
    """A past case's closing as the verdict the live search reads how long a case took
    from (``dispatch_feedback_log``; the other columns keep their defaults); None without
    ``hours_to_close``. The time is stored to the second."""
    if case.hours_to_close is None:
        return None
    return {
        "feedback_id": f"closed-{case.id}",
        "input_id": case.id,
        "verdict": CLOSED_VERDICT,
        "unit": case.resolution or "",
        "code": case.code or "",
        "given_at": case.reported_at + timedelta(hours=case.hours_to_close),
    }


def stored_ids_sql(ids: Sequence[str]) -> str:
    """Which of ``ids`` (at most ``ID_LOOKUP``) are stored already: a repeated id is
    refused rather than replacing the first (a closing verdict of the first could not be
    taken back with it), and the lookup keeps no set of ids in memory."""
    if not 1 <= len(ids) <= ID_LOOKUP:
        raise ValueError(f"look up 1 to {ID_LOOKUP} ids at a time, got {len(ids)}")
    listed = ", ".join(quote_string(i) for i in ids)
    return f"SELECT DISTINCT input_id FROM {EMBEDDINGS_LOG} WHERE input_id IN ({listed})"


def result_line(query_id: str, found: Sequence[PastCase]) -> dict[str, Any]:
    """The answer to a query: the past cases in the search's order (best first; scores
    rounded to 4 places as the board shows them, the order is the exact scores')."""
    similar: list[dict[str, Any]] = []
    for case in found:
        item: dict[str, Any] = {"id": case.case_id, "score": round(case.score, 4)}
        if case.unit:
            item["resolution"] = case.unit
        hours = case.hours_to_verdict
        if hours is not None and math.isfinite(hours):
            item["hours_to_close"] = round(hours, 2)
        similar.append(item)
    return {"id": query_id, "similar": similar}
