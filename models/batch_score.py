"""``citystream score``: dispatch decisions for a file of reports, offline.

The same ``Dispatcher`` as the live agent. One output line per input line, in order; a
line that cannot be read gets an output line with ``error`` (its reason) instead of
being skipped, so outputs stay aligned with inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from processors.dispatch import Dispatcher, DispatchRequest
from schemas.records import DispatchDecision

CHANNELS = ("hotline_12345", "app", "wechat", "web", "letter", "grid_inspector", "other")
BATCH = 64


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    id: str | None
    reason: str


def parse_line(raw: str, line_no: int, now: datetime) -> tuple[str, DispatchRequest] | LineError:
    """(the caller's id, a request) or the reason the line cannot be scored."""
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        return LineError(line_no, None, f"not valid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(item, dict):
        return LineError(line_no, None, f"expected a JSON object, got {type(item).__name__}")
    given_id = item.get("id")
    user_id = str(given_id) if given_id is not None else f"line-{line_no}"
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        return LineError(line_no, user_id, "text: required non-empty string is missing")
    channel = item.get("channel", "other")
    if channel not in CHANNELS:
        return LineError(line_no, user_id, f"channel {channel!r} is not one of {list(CHANNELS)}")
    reported = item.get("reported_at")
    received_at = now
    if reported is not None:
        try:
            received_at = datetime.fromisoformat(str(reported))
        except ValueError:
            return LineError(line_no, user_id, f"reported_at {reported!r} is not ISO 8601")
        if received_at.tzinfo is None:
            return LineError(line_no, user_id, "reported_at needs a UTC offset (+08:00)")
    # The caller's id may be anything; the decision carries a safe internal one.
    request = DispatchRequest(
        input_id=f"line-{line_no}",
        input_kind="city_event" if channel == "grid_inspector" else "citizen_appeal",
        text=text,
        received_at=received_at,
    )
    return user_id, request


def output_line(user_id: str, decision: DispatchDecision) -> dict[str, Any]:
    return {
        "id": user_id,
        "code": decision.code,
        "unit": decision.unit,
        "district": decision.district,
        "street": decision.street,
        "location_type": decision.location_type,
        "confidence": decision.confidence,
        "auto": decision.auto,
        "review_reasons": list(decision.review_reasons),
    }


def error_line(error: LineError) -> dict[str, Any]:
    return {"id": error.id, "line": error.line, "error": error.reason}


def score_lines(
    dispatcher: Dispatcher, lines: Iterable[str], now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Output dicts, one per non-blank input line, in input order."""
    when = now or datetime.now(UTC)
    pending: list[tuple[int, str, DispatchRequest]] = []
    ready: list[tuple[int, dict[str, Any]]] = []

    def flush() -> list[tuple[int, dict[str, Any]]]:
        decisions = dispatcher.decide_batch([r for _, _, r in pending])
        done = [(n, output_line(uid, d)) for (n, uid, _), d in zip(pending, decisions, strict=True)]
        pending.clear()
        return done

    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        parsed = parse_line(raw, line_no, when)
        if isinstance(parsed, LineError):
            ready.append((line_no, error_line(parsed)))
        else:
            pending.append((line_no, *parsed))
        if len(pending) >= BATCH:
            ready.extend(flush())
            ready.sort(key=lambda item: item[0])
            yield from (out for _, out in ready)
            ready.clear()
    if pending:
        ready.extend(flush())
    ready.sort(key=lambda item: item[0])
    yield from (out for _, out in ready)
