"""Ingest: validate, normalise and enrich one message into a ClickHouse row.

Pure: a message in, a ``StoredRow`` or a ``DeadLetter`` out. No Kafka, Faust or
ClickHouse here, so the live agent, the batch tools and the tests run this same code.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from processors.appeal_analysis import analyse
from processors.content_screen import screen
from processors.pii import mask
from schemas.domain import Domain
from schemas.errors import DeadLetter, ErrorKind, RecordError
from schemas.records import (
    SUPPORTED_VERSIONS,
    CaseLink,
    CitizenAppeal,
    CityEvent,
    DetectedFrame,
    DispatchDecision,
    DispatchFeedback,
    HotspotAlert,
    InputRecord,
    VideoFrameRef,
    parse_record,
    utc_naive,
)
from streams.codecs import decode_json

PROCESSOR = "ingest"
# Latency steps of a decision, each stored in its own column (``<step>_ms``).
DECISION_STEPS = ("queue", "address", "features", "inference", "decide", "total")
StoredRecord = (
    InputRecord | DispatchDecision | DispatchFeedback | CaseLink | HotspotAlert | DetectedFrame
)

# Control and zero-width characters carry no meaning in a report and break tokenisers;
# newlines and tabs are kept (folded below).
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u2060\ufeff]"
)
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """What the adapter hands over from Kafka: coordinates and raw bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime  # the Kafka message timestamp (UTC)
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class StoredRow:
    table: str
    record_id: str
    row: dict[str, Any]
    # Rows for other tables from the same message (the raw appeal for the restricted
    # table, a decision's model-audit rows): stored in the same batch.
    extra: tuple[StoredRow, ...] = ()


@dataclass(frozen=True, slots=True)
class IngestContext:
    domain: Domain
    # Full topic name -> the record kind that topic carries.
    kinds_by_topic: dict[str, str]
    max_text_chars: int
    max_message_bytes: int
    # Appeal analysis and the content screen (the dispatch stage reads the same messages
    # through ingest for validation and masking only, and turns this off).
    analyse_appeals: bool = True


@dataclass(frozen=True, slots=True)
class Place:
    district: str
    street: str
    road: str
    warnings: tuple[str, ...]


def normalise_text(text: str, max_chars: int, field: str) -> str:
    """NFKC (full-width digits and letters become ASCII), drop invisibles, fold spaces."""
    if len(text) > max_chars * 4:  # refuse before doing work on a huge string
        raise RecordError(ErrorKind.OVERSIZE, f"{field}: {len(text)} characters, limit {max_chars}")
    out = unicodedata.normalize("NFKC", text)
    out = _INVISIBLE.sub("", out).replace("\r\n", "\n").replace("\r", "\n")
    out = _BLANK_LINES.sub("\n", _SPACES.sub(" ", out))
    out = "\n".join(line.strip() for line in out.split("\n")).strip()
    if not out:
        raise RecordError(ErrorKind.INVALID_FIELD, f"{field}: empty after normalisation")
    if len(out) > max_chars:
        raise RecordError(ErrorKind.OVERSIZE, f"{field}: {len(out)} characters, limit {max_chars}")
    return out


def _canonical_street(domain: Domain, street: str) -> str | None:
    bare = street.removesuffix("办事处")
    for candidate in (street, bare, bare + "街道"):
        if candidate in domain.street_district:
            return candidate
    return None


def resolve_place(
    domain: Domain,
    district: str | None,
    street: str | None,
    road: str | None,
    strict: bool = True,
) -> Place:
    """Canonical district/street/road; a known street implies its district.

    ``strict``: an unknown district is an error (structured sources must use the
    domain's names); otherwise a warning (a citizen's words are no reason to lose them).
    """
    warnings: list[str] = []
    canonical_district = ""
    if district:
        found = domain.canonical_district(district.strip())
        if found is None and not strict:
            warnings.append("unknown_district")
        elif found is None:
            raise RecordError(
                ErrorKind.UNKNOWN_PLACE,
                f"district {district!r} is not a district or alias of the domain "
                f"({', '.join(domain.districts)})",
            )
        else:
            canonical_district = found
    canonical_street = ""
    if street:
        found_street = _canonical_street(domain, street.strip())
        if found_street is None:
            warnings.append("unknown_street")
            canonical_street = street.strip()
        else:
            canonical_street = found_street
            street_district = domain.street_district[found_street]
            if canonical_district and canonical_district != street_district:
                warnings.append("district_conflicts_with_street")
            canonical_district = street_district
    road_name = (road or "").strip()
    if road_name:
        districts = domain.road_districts.get(road_name)
        if districts is None:
            warnings.append("unknown_road")
        elif not canonical_district:
            if len(districts) == 1:
                canonical_district = districts[0]
            else:
                warnings.append("road_in_several_districts")
        elif canonical_district not in districts:
            warnings.append("road_not_in_district")
    return Place(canonical_district, canonical_street, road_name, tuple(warnings))


def _optional_text(text: str | None, max_chars: int, field: str) -> str:
    """An optional free-text field: blank means absent, not an error."""
    if text is None or not text.strip():
        return ""
    return normalise_text(text, max_chars, field)


def _kafka_columns(msg: SourceMessage) -> dict[str, Any]:
    return {"kafka_topic": msg.topic, "kafka_partition": msg.partition, "kafka_offset": msg.offset}


def _timing(msg: SourceMessage, occurred: datetime, received_at: datetime) -> dict[str, Any]:
    return {
        "ingested_at": utc_naive(received_at),
        # From the broker accepting the message to this stage seeing it.
        "ingest_latency_ms": round((received_at - msg.timestamp).total_seconds() * 1000, 3),
        # From the source's own timestamp to this stage: delays upstream of Kafka.
        "report_delay_s": round((received_at - occurred).total_seconds(), 3),
    }


def _city_event_row(
    rec: CityEvent, msg: SourceMessage, ctx: IngestContext, received_at: datetime
) -> StoredRow:
    domain = ctx.domain
    place = resolve_place(domain, rec.district, rec.street, rec.road)
    if rec.location_type is not None and rec.location_type not in domain.location_types:
        raise RecordError(
            ErrorKind.INVALID_FIELD,
            f"location_type {rec.location_type!r} is not one of {list(domain.location_types)}",
        )
    event_type = None
    if rec.code is not None:
        event_type = domain.event_types.get(rec.code)
        if event_type is None:
            raise RecordError(ErrorKind.UNKNOWN_CODE, f"code {rec.code!r} is not in the taxonomy")
    description = mask(normalise_text(rec.description, ctx.max_text_chars, "description"))
    row = {
        "event_id": rec.event_id,
        "source": rec.source,
        "reported_at": utc_naive(rec.reported_at),
        **_timing(msg, rec.reported_at, received_at),
        "district": place.district,
        "street": place.street,
        "road": place.road,
        "address": _optional_text(rec.address, 500, "address"),
        "location_type": rec.location_type or "",
        "lon": rec.lon,
        "lat": rec.lat,
        "code": rec.code or "",
        "event_class": event_type.event_class if event_type else "",
        "event_name": event_type.name if event_type else "",
        "urgency": event_type.urgency if event_type else "",
        # Content safety first: an inspector's note may name a resident or a number.
        "description": description.text,
        "reporter_id": rec.reporter_id or "",
        "warnings": list(place.warnings),
        "schema_version": rec.schema_version,
        **_kafka_columns(msg),
    }
    row["pii_types"] = sorted({span.type for span in description.spans})
    # A camera's evidence (migration 0008 added these columns after pii_types).
    row["camera_id"] = rec.camera_id or ""
    row["detected_class"] = rec.detected_class or ""
    row["confidence"] = rec.confidence
    row["snapshot_uri"] = rec.snapshot_uri or ""
    return StoredRow("city_events_log", rec.event_id, row)


def _appeal_row(
    rec: CitizenAppeal, msg: SourceMessage, ctx: IngestContext, received_at: datetime
) -> StoredRow:
    place = resolve_place(ctx.domain, rec.district, None, None, strict=False)
    raw_text = normalise_text(rec.text, ctx.max_text_chars, "text")
    raw_address = _optional_text(rec.address, 500, "address")
    # Content safety first in the path: what is stored here and sent to any model is the
    # masked text; the raw text goes only to the restricted table (admin role).
    masked = mask(raw_text)
    text = masked.text
    analysis = analyse(text, rec.channel, None, ctx.domain) if ctx.analyse_appeals else None
    screened = screen(text) if ctx.analyse_appeals else None
    row = {
        "appeal_id": rec.appeal_id,
        "channel": rec.channel,
        "received_at": utc_naive(rec.received_at),
        **_timing(msg, rec.received_at, received_at),
        "text": text,
        "text_chars": len(raw_text),
        "district": place.district,
        "address": mask(raw_address).text,
        # The caller's name and number are personal data: only whether they were given.
        "has_caller_contact": int(bool(rec.caller_phone or rec.caller_name)),
        "warnings": list(place.warnings),
        "schema_version": rec.schema_version,
        **_kafka_columns(msg),
        "pii_types": sorted({span.type for span in masked.spans}),
        "urgency": analysis.urgency if analysis else "",
        "urgency_reasons": list(analysis.urgency_reasons) if analysis else [],
        "sentiment": analysis.sentiment if analysis else "",
        "sentiment_score": analysis.sentiment_score if analysis else 0.0,
        "repeat_complaint": int(analysis.repeat_complaint) if analysis else 0,
        "content_flags": list(screened.flags) if screened else [],
        "screen_score": screened.score if screened else 0.0,
    }
    raw = StoredRow(
        "citizen_appeals_raw_log",
        rec.appeal_id,
        {
            "appeal_id": rec.appeal_id,
            "received_at": utc_naive(rec.received_at),
            "text": raw_text,
            "address": raw_address,
            "caller_name": rec.caller_name or "",
            "caller_phone": rec.caller_phone or "",
            **_kafka_columns(msg),
        },
    )
    return StoredRow("citizen_appeals_log", rec.appeal_id, row, extra=(raw,))



def _frame_row(
    rec: VideoFrameRef, msg: SourceMessage, ctx: IngestContext, received_at: datetime
) -> StoredRow:
    place = resolve_place(ctx.domain, rec.district, rec.street, rec.road)
    row = {
        "frame_id": rec.frame_id,
        "camera_id": rec.camera_id,
        "captured_at": utc_naive(rec.captured_at),
        **_timing(msg, rec.captured_at, received_at),
        "seq": rec.seq,
        "uri": rec.uri,
        "width": rec.width,
        "height": rec.height,
        "content_type": rec.content_type,
        "district": place.district,
        "street": place.street,
        "road": place.road,
        "location_type": rec.location_type or "",
        "lon": rec.lon,
        "lat": rec.lat,
        "warnings": list(place.warnings),
        "schema_version": rec.schema_version,
        **_kafka_columns(msg),
    }
    return StoredRow("video_frames_log", rec.frame_id, row)


def _decision_row(rec: DispatchDecision, msg: SourceMessage) -> StoredRow:
    latency = rec.latency_ms
    row = {
        "input_id": rec.input_id,
        "input_kind": rec.input_kind,
        "channel": rec.channel or "",
        "text": rec.text,
        "code": rec.code,
        "event_name": rec.event_name,
        "urgency": rec.urgency,
        "route": rec.route,
        "unit": rec.unit or "",
        "district": rec.district or "",
        "street": rec.street or "",
        "road": rec.road or "",
        "place": rec.place or "",
        "location_type": rec.location_type or "",
        "confidence": rec.confidence,
        "auto": int(rec.auto),
        "review_reasons": list(rec.review_reasons),
        "alt_units": [a.unit for a in rec.alternatives],
        "alt_codes": [a.code for a in rec.alternatives],
        "alt_confidences": [a.confidence for a in rec.alternatives],
        "unresolved": list(rec.unresolved),
        "model_versions": json.dumps(rec.model_versions, sort_keys=True),
        "backend": rec.backend,
        **{f"{step}_ms": float(latency.get(step, 0.0)) for step in DECISION_STEPS},
        "received_at": utc_naive(rec.received_at),
        "respond_by": utc_naive(rec.respond_by or rec.received_at),
        "decided_at": utc_naive(rec.decided_at),
        "decided_at_ms": int(rec.decided_at.timestamp() * 1000),
        **_kafka_columns(msg),
    }
    return StoredRow("dispatch_decisions_log", rec.input_id, row, extra=_audit_rows(rec, msg))


def audit_row(
    input_id: str,
    model: str,
    version: str,
    text: str,
    output: Mapping[str, Any],
    backend: str,
    processor: str,
    produced_at: datetime,
    kafka: Mapping[str, Any],
) -> StoredRow:
    """One model output, audited: which model and version saw which input (by hash: the
    text itself is stored masked with its record) and what it answered. ``produced_at``
    is the decision's time, so a repeated delivery collapses into the same row."""
    return StoredRow("model_audit_log", f"{input_id}:{model}", {
        "input_id": input_id,
        "model": model,
        "version": version,
        "input_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "output": json.dumps(output, ensure_ascii=False, sort_keys=True),
        "backend": backend,
        "processor": processor,
        "produced_at": utc_naive(produced_at),
        "produced_at_ms": int(produced_at.timestamp() * 1000),
        **kafka,
    })


def _audit_rows(rec: DispatchDecision, msg: SourceMessage) -> tuple[StoredRow, ...]:
    """Every dispatch model output, audited."""
    outputs = {
        "event_classifier": {"code": rec.code, "alt_codes": [a.code for a in rec.alternatives]},
        "dispatch_router": {
            "route": rec.route,
            "unit": rec.unit,
            "confidence": rec.confidence,
            "alt_routes": [a.route for a in rec.alternatives],
        },
    }
    return tuple(
        audit_row(rec.input_id, model, version, rec.text, outputs.get(model, {}), rec.backend,
                  "dispatch", rec.decided_at, _kafka_columns(msg))
        for model, version in sorted(rec.model_versions.items())
    )


def _feedback_row(rec: DispatchFeedback, msg: SourceMessage) -> StoredRow:
    row = {
        "feedback_id": rec.feedback_id,
        "input_id": rec.input_id,
        "verdict": rec.verdict,
        "unit": rec.unit,
        "code": rec.code or "",
        "dispatcher_id": rec.dispatcher_id,
        "given_at": utc_naive(rec.given_at),
        "auto": None if rec.auto is None else int(rec.auto),
        "decided_unit": rec.decided_unit or "",
        "received_at": utc_naive(rec.received_at) if rec.received_at else None,
        "respond_by": utc_naive(rec.respond_by) if rec.respond_by else None,
        **_kafka_columns(msg),
    }
    return StoredRow("dispatch_feedback_log", rec.feedback_id, row)


def _case_link_row(rec: CaseLink, msg: SourceMessage) -> StoredRow:
    reported = rec.reported_at or rec.linked_at
    row = {
        "input_id": rec.input_id,
        "case_id": rec.case_id,
        "merge_key": rec.merge_key,
        "merged": int(rec.merged),
        "reporters": rec.reporters,
        "absorbed": list(rec.absorbed),
        "relinked": int(rec.relinked),
        "district": rec.district or "",
        "code": rec.code,
        "event_name": rec.event_name,
        "place_level": rec.place_level,
        "place": rec.place,
        "reported_at": utc_naive(reported),
        "linked_at": utc_naive(rec.linked_at),
        "linked_at_ms": int(rec.linked_at.timestamp() * 1000),
        **_kafka_columns(msg),
    }
    return StoredRow("case_links_log", rec.input_id, row)


def _hotspot_row(rec: HotspotAlert, msg: SourceMessage) -> StoredRow:
    row = {
        "hotspot_id": rec.hotspot_id,
        "district": rec.district,
        "place_level": rec.place_level,
        "place": rec.place,
        "cases": rec.cases,
        "first_day": date.fromisoformat(rec.first_day),
        "last_day": date.fromisoformat(rec.last_day),
        "case_ids": list(rec.case_ids),
        "raised_at": utc_naive(rec.raised_at),
        "raised_at_ms": int(rec.raised_at.timestamp() * 1000),
        **_kafka_columns(msg),
    }
    return StoredRow("hotspots_log", rec.hotspot_id, row)


def _frame_detections_row(rec: DetectedFrame, msg: SourceMessage) -> StoredRow:
    found = rec.detections
    row = {
        "frame_id": rec.frame_id,
        "camera_id": rec.camera_id,
        "seq": rec.seq,
        "captured_at": utc_naive(rec.captured_at),
        "captured_at_ms": int(rec.captured_at.timestamp() * 1000),
        "processed_at": utc_naive(rec.processed_at),
        "width": rec.width,
        "height": rec.height,
        "model": rec.model,
        "snapshot_uri": rec.snapshot_uri or "",
        "latency_ms": rec.latency_ms,
        "class_name": [d.class_name for d in found],
        "code": [d.code or "" for d in found],
        "score": [d.score for d in found],
        "track_id": [d.track_id or "" for d in found],
        # Parallel arrays, one per edge: the view ARRAY JOINs them into rows.
        **{edge: [d.box[i] for d in found] for i, edge in enumerate(("x1", "y1", "x2", "y2"))},
        **_kafka_columns(msg),
    }
    return StoredRow("frame_detections_log", rec.frame_id, row)


def _to_row(
    rec: StoredRecord, msg: SourceMessage, ctx: IngestContext, received_at: datetime
) -> StoredRow:
    if isinstance(rec, CaseLink):
        return _case_link_row(rec, msg)
    if isinstance(rec, HotspotAlert):
        return _hotspot_row(rec, msg)
    if isinstance(rec, DetectedFrame):
        return _frame_detections_row(rec, msg)
    if isinstance(rec, DispatchDecision):
        return _decision_row(rec, msg)
    if isinstance(rec, DispatchFeedback):
        return _feedback_row(rec, msg)
    if isinstance(rec, CityEvent):
        return _city_event_row(rec, msg, ctx, received_at)
    if isinstance(rec, CitizenAppeal):
        return _appeal_row(rec, msg, ctx, received_at)
    return _frame_row(rec, msg, ctx, received_at)


def stored_dead_letter(msg: SourceMessage) -> StoredRow:
    """A dead letter another stage published (the vision stage has no warehouse of its
    own), as its row; rows key on the source message, so the worker's own letters, stored
    when they were made, are not stored twice. Never a dead letter itself (that would
    loop): an unreadable one is stored as a letter about its own offset, with the reason."""
    import base64

    try:
        wire = decode_json(msg.value, 16 * 1024 * 1024)
        letter = DeadLetter(
            source_topic=str(wire["source_topic"]),
            source_partition=int(wire["source_partition"]),
            source_offset=int(wire["source_offset"]),
            error_kind=ErrorKind(wire["error_kind"]),
            reason=str(wire["reason"]),
            original=base64.b64decode(wire["original_b64"], validate=True),
            key=base64.b64decode(wire["key_b64"], validate=True) if wire.get("key_b64") else None,
            failed_at=datetime.fromisoformat(str(wire["failed_at"])),
            processor=str(wire["processor"]),
        )
        if letter.failed_at.tzinfo is None:
            raise ValueError("failed_at has no UTC offset")
    except (RecordError, KeyError, TypeError, ValueError) as exc:
        letter = DeadLetter(msg.topic, msg.partition, msg.offset, ErrorKind.INVALID_FIELD,
                            f"an unreadable dead letter: {exc}", msg.value or b"", msg.key,
                            msg.timestamp, PROCESSOR)
    return StoredRow(DEAD_LETTERS_TABLE, f"{letter.source_topic}/{letter.source_offset}",
                     dead_letter_row(letter))


def ingest(msg: SourceMessage, ctx: IngestContext, received_at: datetime) -> StoredRow | DeadLetter:
    """Process one message. Never raises for bad input: a bad message is a ``DeadLetter``."""
    expected = ctx.kinds_by_topic.get(msg.topic)
    if expected == "dead_letter":
        return stored_dead_letter(msg)
    try:
        obj = decode_json(msg.value, ctx.max_message_bytes)
        # The topic check first: a record on the wrong topic is a routing bug upstream,
        # whatever else may be wrong with it.
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if isinstance(kind, str) and kind in SUPPORTED_VERSIONS and kind != expected:
            raise RecordError(
                ErrorKind.WRONG_TOPIC,
                f"a {kind} record on topic {msg.topic}, which carries {expected}",
            )
        record = parse_record(obj)
        if record.kind != expected or not isinstance(record, StoredRecord):
            raise RecordError(
                ErrorKind.WRONG_TOPIC, f"a {record.kind} record on topic {msg.topic}"
            )
        return _to_row(record, msg, ctx, received_at)
    except RecordError as err:
        return DeadLetter(
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            error_kind=err.kind,
            reason=err.reason,
            original=msg.value or b"",
            key=msg.key,
            failed_at=received_at,
            processor=PROCESSOR,
        )


@dataclass(slots=True)
class Batch:
    """One micro-batch's outcomes, grouped by destination."""

    rows_by_table: dict[str, list[dict[str, Any]]]
    dead_letters: list[DeadLetter]


DEAD_LETTERS_TABLE = "dead_letters_log"


def dead_letter_row(dl: DeadLetter) -> dict[str, Any]:
    wire = dl.to_wire()
    return {
        "source_topic": dl.source_topic,
        "source_partition": dl.source_partition,
        "source_offset": dl.source_offset,
        "error_kind": str(dl.error_kind),
        "reason": dl.reason,
        "original_b64": wire["original_b64"],
        "key_b64": wire["key_b64"] or "",
        "failed_at": utc_naive(dl.failed_at),
        "processor": dl.processor,
    }


def group_outcomes(outcomes: list[StoredRow | DeadLetter]) -> Batch:
    """Group a micro-batch for the sink; dead letters are stored too, keyed by source offset."""
    batch = Batch({}, [])
    for outcome in outcomes:
        if isinstance(outcome, StoredRow):
            for stored in (outcome, *outcome.extra):
                batch.rows_by_table.setdefault(stored.table, []).append(stored.row)
        else:
            batch.dead_letters.append(outcome)
            batch.rows_by_table.setdefault(DEAD_LETTERS_TABLE, []).append(dead_letter_row(outcome))
    return batch
