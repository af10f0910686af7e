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
# A grid inspector's report is a city event in the live pipeline; its text is read the
# same way (the channel only travels along into the decision).
CHANNELS = (*APPEAL_CHANNELS, "grid_inspector")
BATCH_TOPIC = "batch.appeals"


def batch_context(ctx: IngestContext) -> IngestContext:
    """The live ingest context, reading this command's lines as appeals (validation and
    masking only: the dispatch stage's view)."""
    return dataclasses.replace(
        ctx, kinds_by_topic={BATCH_TOPIC: "citizen_appeal"}, analyse_appeals=False
    )


def read_line(
    line: InputLine, ctx: IngestContext, now: datetime, time_field: str = "reported_at"
) -> DispatchRequest | Rejected:
    """The request the live agent would build for this line, or why it would not. The
    report's time is ``time_field`` (ISO 8601 with a UTC offset), ``now`` without it."""
    record = line.record
    channel = record.get("channel", "other")
    if channel not in CHANNELS:
        return Rejected(f"channel {channel!r} is not one of {list(CHANNELS)}")
    reported = record.get(time_field)
    if reported is not None and not isinstance(reported, str):
        return Rejected(f"{time_field}: not a string (ISO 8601 with a UTC offset)")
    wire = {
        "kind": "citizen_appeal",
        "schema_version": 1,
        # The caller's id may be anything; the request carries a safe internal one.
        "appeal_id": f"line-{line.number}",
        "channel": channel if channel in APPEAL_CHANNELS else "other",
        "received_at": reported or now.isoformat(),
        "text": record["text"],
    }
    msg = SourceMessage(BATCH_TOPIC, 0, line.number, now, None, orjson.dumps(wire))
    outcome = ingest(msg, ctx, now)
    if not isinstance(outcome, StoredRow):
        # Ingest names the wire field; the caller knows the time by its own name.
        return Rejected(outcome.reason.replace("received_at:", f"{time_field}:", 1))
    request = request_from_row(outcome)
    if request is None:  # ingest stored a report: cannot happen for an appeal
        return Rejected("not a report")
    if channel == "grid_inspector":
        request = dataclasses.replace(request, input_kind="city_event", channel=channel)
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
