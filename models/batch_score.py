"""``citystream score``: dispatch decisions for a file of reports, offline.

Each line goes the live agent's way: built into the wire appeal it would arrive as, through
ingest's validation, normalisation and masking (``processors.ingest.ingest``; a line ingest
refuses is rejected with ingest's reason, as the live path dead-letters it), then decided
by the same ``Dispatcher``, a micro-batch at a time. In the ``streams.batch`` frame:
outputs in input order, rejects with line number and reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.dispatch import Dispatcher, DispatchRequest, request_from_row
from processors.ingest import IngestContext, SourceMessage, StoredRow, ingest
from schemas.records import DispatchDecision
from streams.batch import InputLine, Rejected

SCORE_FIELDS = ("id", "text")
APPEAL_CHANNELS = ("hotline_12345", "app", "wechat", "web", "letter", "other")
# A grid inspector's report is a city event on the stream, with the place the inspector
# established; an appeal may name its district and address. Optional on a line, as on the
# wire.
CHANNELS = (*APPEAL_CHANNELS, "grid_inspector")
EVENT_PLACE_FIELDS = ("district", "street", "road", "address", "location_type")
APPEAL_PLACE_FIELDS = ("district", "address")
APPEALS_TOPIC = "batch.appeals"
EVENTS_TOPIC = "batch.events"


def batch_context(ctx: IngestContext) -> IngestContext:
    """The live ingest context, reading this command's lines as appeals and city events
    (validation and masking only: the dispatch stage's view)."""
    return dataclasses.replace(
        ctx,
        kinds_by_topic={APPEALS_TOPIC: "citizen_appeal", EVENTS_TOPIC: "city_event"},
        analyse_appeals=False,
    )


def wire_of(line: InputLine, at: str) -> tuple[str, dict[str, Any]] | Rejected:
    """(topic, the wire record the live agent would receive) for a line."""
    record = line.record
    channel = record.get("channel", "other")
    if channel not in CHANNELS:
        return Rejected(f"channel {channel!r} is not one of {list(CHANNELS)}")
    # The caller's id may be anything; the record carries a safe internal one.
    internal_id = f"line-{line.number}"
    if channel == "grid_inspector":
        event = {"kind": "city_event", "schema_version": 1, "event_id": internal_id,
                 "source": channel, "reported_at": at, "description": record["text"]}
        event |= {k: record[k] for k in EVENT_PLACE_FIELDS if k in record}
        return EVENTS_TOPIC, event
    appeal = {"kind": "citizen_appeal", "schema_version": 1, "appeal_id": internal_id,
              "channel": channel, "received_at": at, "text": record["text"]}
    appeal |= {k: record[k] for k in APPEAL_PLACE_FIELDS if k in record}
    return APPEALS_TOPIC, appeal


def read_line(
    line: InputLine, ctx: IngestContext, now: datetime, time_field: str = "reported_at"
) -> DispatchRequest | Rejected:
    """The request the live agent would build for this line, or why it would not. The
    report's time is ``time_field`` (ISO 8601 with a UTC offset), ``now`` without it."""
    reported = line.record.get(time_field)
    if reported is not None and not isinstance(reported, str):
        return Rejected(f"{time_field}: not a string (ISO 8601 with a UTC offset)")
    wired = wire_of(line, reported or now.isoformat())
    if isinstance(wired, Rejected):
        return wired
    topic, wire = wired
    msg = SourceMessage(topic, 0, line.number, now, None, orjson.dumps(wire))
    outcome = ingest(msg, ctx, now)
    if not isinstance(outcome, StoredRow):
        # Ingest names the wire field; the caller knows it by the line's name.
        field, sep, rest = outcome.reason.partition(":")
        line_field = {"received_at": time_field, "reported_at": time_field,
                      "description": "text"}.get(field) if sep else None
        return Rejected(f"{line_field}:{rest}" if line_field else outcome.reason)
    request = request_from_row(outcome)
    if request is None:  # ingest stored a report: cannot happen for these two kinds
        return Rejected("not a report")
    return request


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


def decide_lines(
    lines: Sequence[InputLine],
    dispatcher: Dispatcher,
    ctx: IngestContext,
    now: datetime | None = None,
    time_field: str = "reported_at",
) -> list[DispatchDecision | Rejected]:
    """The live agent's decision for each line it would decide, the reason for the others;
    in order. ``ctx``: ``batch_context`` of the live ingest context."""
    when = now or datetime.now(UTC)
    read = [read_line(line, ctx, when, time_field) for line in lines]
    requests = [r for r in read if isinstance(r, DispatchRequest)]
    decisions = iter(dispatcher.decide_batch(requests) if requests else ())
    return [item if isinstance(item, Rejected) else next(decisions) for item in read]


def score_lines(
    lines: Sequence[InputLine],
    dispatcher: Dispatcher,
    ctx: IngestContext,
    now: datetime | None = None,
) -> list[dict[str, Any] | Rejected]:
    """``decide_lines`` as the command's output lines."""
    return [
        item if isinstance(item, Rejected) else output_line(line.record["id"], item)
        for line, item in zip(lines, decide_lines(lines, dispatcher, ctx, now), strict=True)
    ]
