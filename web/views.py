"""What the pages show, as pure functions: query rows in, JSON documents out.

No aiohttp, Kafka or ClickHouse here: the server (``web.server``) runs the queries kept in
``schemas.dashboard`` and hands the rows over, so the same shaping is tested without I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from processors.similar import (
    PastCase,
    similar_cases_sql,
    stored_embedding_from_rows,
    stored_filters,
)
from schemas.domain import Domain
from schemas.records import RECORD_ID_PATTERN, DispatchFeedback
from streams.clickhouse import QueryResult

# The city dashboard's windows (hours): a day, a week, a month.
CITY_WINDOWS = (24, 168, 720)
REVIEW_QUEUE_LIMIT = 200
RECENT_LIMIT = 50
HANDLED_LIMIT = 20
# Similar past cases on the board: how many (k), how far back, how much of their text.
SIMILAR_DEFAULT_K = 5
SIMILAR_MAX_K = 20
SIMILAR_WINDOW = timedelta(days=365)
SIMILAR_TEXT_CHARS = 80

# How the pages name the channels reports arrive by (appeals' channels, events' sources).
CHANNEL_LABELS = {
    "hotline_12345": "12345热线",
    "app": "市民App",
    "wechat": "微信",
    "web": "网站",
    "letter": "来信",
    "grid_inspector": "网格员",
    "camera": "视频监控",
    "sensor": "传感器",
    "hotline": "热线转办",
    "other": "其他",
}


def to_utc(value: Any) -> datetime | None:
    """A ClickHouse DateTime as an aware UTC datetime: the server driver gives datetimes,
    chDB's JSON gives 'YYYY-MM-DD hh:mm:ss' strings; both are UTC in our tables."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = datetime.fromisoformat(str(value).replace(" ", "T"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def cell(value: Any) -> Any:
    """A value JSON can carry: datetimes as ISO 8601 UTC, NaN and infinities as null."""
    if isinstance(value, datetime):
        return to_utc(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple | list):
        return [cell(v) for v in value]
    return value


def _iso(value: Any) -> str | None:
    moment = to_utc(value)
    return moment.isoformat() if moment else None


def rows_as_dicts(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def review_item(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """One report waiting for a dispatcher: due when its urgency's response time runs out."""
    respond_by = to_utc(row["respond_by"]) or now
    minutes_left = (respond_by - now).total_seconds() / 60
    alternatives = [
        {"unit": unit, "code": code, "confidence": round(float(conf), 4)}
        for unit, code, conf in zip(
            row["alt_units"], row["alt_codes"], row["alt_confidences"], strict=False
        )
    ]
    return {
        "input_id": row["input_id"],
        "received_at": _iso(row["received_at"]),
        "respond_by": respond_by.isoformat(),
        "decided_at": _iso(row["decided_at"]),
        "overdue": minutes_left < 0,
        "minutes_left": round(minutes_left, 1),
        "code": row["code"],
        "event_name": row["event_name"],
        "urgency": row["urgency"],
        "unit": row["unit"],
        "district": row["district"],
        "street": row["street"],
        "channel": row["channel"],
        "text": row["text"],
        "confidence": round(float(row["confidence"]), 4),
        "review_reasons": list(row["review_reasons"]),
        "alternatives": alternatives,
    }


def board_payload(
    *,
    now: datetime,
    counts: QueryResult,
    queue: QueryResult,
    recent: QueryResult,
    handled: QueryResult,
    units: Sequence[str],
) -> dict[str, Any]:
    """The dispatch board's document (see web/static/board.js for how it is shown)."""
    count_row = rows_as_dicts(counts)
    items = [review_item(r, now) for r in rows_as_dicts(queue)]
    # Most pressing first: overdue by how long, then by time left.
    items.sort(key=lambda item: item["minutes_left"])
    return {
        "now": now.isoformat(),
        "counts": {k: int(v or 0) for k, v in (count_row[0] if count_row else {}).items()},
        "review_queue": items,
        "recent": [
            {k: cell(v) for k, v in r.items()} | {"auto": bool(r.get("auto"))}
            for r in rows_as_dicts(recent)
        ],
        "recently_handled": [{k: cell(v) for k, v in r.items()} for r in rows_as_dicts(handled)],
        "units": list(units),
    }


@dataclass(frozen=True, slots=True)
class CityWindow:
    since: datetime
    until: datetime
    hours: int


class RequestRefused(ValueError):
    """A request the server answers with an error status and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def city_window(hours: str | None, now: datetime) -> CityWindow:
    """The dashboard's time window, ending at the current hour's end (whole hourly buckets)."""
    try:
        span = int(hours or CITY_WINDOWS[0])
    except ValueError as exc:
        raise RequestRefused(f"hours must be one of {CITY_WINDOWS}") from exc
    if span not in CITY_WINDOWS:
        raise RequestRefused(f"hours must be one of {CITY_WINDOWS}")
    until = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return CityWindow(until - timedelta(hours=span), until, span)


def city_labels(domain: Domain) -> dict[str, dict[str, str]]:
    classes = {t.code[0]: t.event_class for t in domain.event_types.values()}
    return {"event_classes": dict(sorted(classes.items())), "channels": dict(CHANNEL_LABELS)}


def city_payload(
    window: CityWindow, panels: Mapping[str, QueryResult], labels: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "range": {
            "since": window.since.isoformat(),
            "until": window.until.isoformat(),
            "hours": window.hours,
        },
        "labels": dict(labels),
        "panels": {
            name: {"columns": list(r.columns), "rows": [cell(list(row)) for row in r.rows]}
            for name, r in panels.items()
        },
    }


_CODE = re.compile(r"^[A-Z][0-9]{2}$")


def feedback_from_request(
    body: Any,
    decision: Mapping[str, Any] | None,
    *,
    dispatcher: str,
    units: frozenset[str],
    feedback_id: str,
    now: datetime,
) -> DispatchFeedback:
    """A dispatcher's verdict as the record published to dispatch.feedback.

    ``decision`` is the stored decision the verdict is about (None: no such report). The
    decision's facts go with the verdict, so accuracy and response-time aggregates need no
    join (see DispatchFeedback)."""
    if not isinstance(body, Mapping):
        raise RequestRefused("the body must be a JSON object")
    verdict, unit, code = body.get("verdict"), body.get("unit"), body.get("code")
    if verdict not in ("confirmed", "corrected"):
        raise RequestRefused("verdict must be 'confirmed' or 'corrected'")
    if decision is None:
        raise RequestRefused(f"no decision for report {body.get('input_id')!r}", status=404)
    if not isinstance(unit, str) or unit not in units:
        raise RequestRefused(f"unknown unit {unit!r}: choose one of the city's units")
    if verdict == "confirmed" and unit != decision["unit"]:
        raise RequestRefused(
            "a confirmation keeps the proposed unit; use 'corrected' to send it elsewhere"
        )
    if code is not None and (not isinstance(code, str) or not _CODE.match(code)):
        raise RequestRefused("code must look like A01")
    try:
        return DispatchFeedback(
            kind="dispatch_feedback",
            schema_version=1,
            feedback_id=feedback_id,
            input_id=decision["input_id"],
            verdict=verdict,
            unit=unit,
            code=code or decision["code"] or None,
            dispatcher_id=dispatcher,
            given_at=now.isoformat(),  # type: ignore[arg-type]
            auto=bool(decision["auto"]),
            decided_unit=decision["unit"] or None,
            received_at=_iso(decision["received_at"]),  # type: ignore[arg-type]
            respond_by=_iso(decision["respond_by"]),  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        raise RequestRefused(f"invalid feedback: {exc.errors()[0]['msg']}") from exc


def safe_next(target: str | None, default: str = "/board") -> str:
    """Where to go after signing in: only a path on this site (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


# ------------------------------------------------------------- similar past cases

_RECORD_ID = re.compile(RECORD_ID_PATTERN)
_K = re.compile(r"[0-9]{1,3}")


def snapshot_sql(input_id: str | None) -> str:
    """``GET /api/snapshot``'s query: a camera event's stored snapshot reference."""
    if not input_id or not _RECORD_ID.fullmatch(input_id):
        raise RequestRefused("input_id must be a report id")
    return (f"SELECT snapshot_uri FROM city_events WHERE event_id = '{input_id}' "
            "AND snapshot_uri != '' LIMIT 1")


def snapshot_file(uri: str, store: Path) -> Path:
    """The file a snapshot uri names, only if it is a JPEG under ``store`` (the vision
    stage's snapshot directory): nothing else on the server can be fetched this way."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise RequestRefused("the snapshot is not in this server's store", 404)
    path = Path(unquote(parsed.path)).resolve()
    root = store.resolve()
    if root not in path.parents or path.suffix.lower() != ".jpg" or not path.is_file():
        raise RequestRefused("no such snapshot", 404)
    return path


def similar_params(input_id: str | None, k: str | None) -> tuple[str, int]:
    """``GET /api/similar``'s query: a report id and how many cases (1..SIMILAR_MAX_K,
    SIMILAR_DEFAULT_K when absent)."""
    if not input_id or not _RECORD_ID.fullmatch(input_id):
        raise RequestRefused("input_id must be a report id (letters, digits, _ . : -, 1-64)")
    if k is None or k == "":
        return input_id, SIMILAR_DEFAULT_K
    if not _K.fullmatch(k) or not 1 <= int(k) <= SIMILAR_MAX_K:
        raise RequestRefused(f"k must be a whole number from 1 to {SIMILAR_MAX_K}")
    return input_id, int(k)


def similar_search_sql(stored: QueryResult, input_id: str, k: int) -> str:
    """The search for a report's similar past cases, from its stored embedding row (the
    rows of ``processors.similar.stored_embedding_sql``): same code when classified, same
    district when resolved, the year before the report, not its own case; with the past
    reports' texts. 404 when the report has no embedding (yet)."""
    found = stored_embedding_from_rows(stored.rows)
    if found is None:
        raise RequestRefused(f"no stored embedding for report {input_id!r} (yet)", status=404)
    try:
        return similar_cases_sql(
            found.embedding,
            stored_filters(found, window=SIMILAR_WINDOW),
            k,
            dims=len(found.embedding),
            with_text=True,
        )
    except ValueError as exc:
        raise RequestRefused(f"report {input_id!r} cannot be searched: {exc}", 500) from exc


def text_excerpt(text: str, limit: int = SIMILAR_TEXT_CHARS) -> str:
    """The start of a (masked) text on one line: whitespace runs as one space, at most
    ``limit`` characters."""
    return " ".join(text.split())[:limit]


def past_case_item(case: PastCase) -> dict[str, Any]:
    item: dict[str, Any] = {
        "case_id": case.case_id,
        "input_id": case.input_id,
        "code": case.code,
        "event_name": case.event_name,
        "district": case.district,
        "unit": case.unit,
        "verdict": case.verdict,
        "reported_at": _iso(case.reported_at),
        "hours_to_verdict": (
            None
            if case.hours_to_verdict is None or not math.isfinite(case.hours_to_verdict)
            else round(case.hours_to_verdict, 2)
        ),
        "score": round(case.score, 4),
    }
    if case.text is not None:
        item["text"] = text_excerpt(case.text)
    return item


def similar_payload(input_id: str, cases: Sequence[PastCase]) -> dict[str, Any]:
    """``GET /api/similar``'s document: the report's most similar past cases, best first
    (times in UTC, which the board shows in Beijing time)."""
    return {"input_id": input_id, "cases": [past_case_item(c) for c in cases]}
