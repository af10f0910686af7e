"""What analysts can query: the views, what a row is, and what each column means.

Kept next to the DDL and checked against it (tests compare every view's real columns,
on chDB and on the server, with the ones described here), so the catalogue cannot
silently fall behind a migration.
"""

from __future__ import annotations

from dataclasses import dataclass

# Columns several views share, described once.
_KAFKA = {
    "kafka_topic": "topic the record was read from",
    "kafka_partition": "its partition",
    "kafka_offset": "its offset (with topic and partition: where to replay it from)",
}
_DETECTION = {
    "class_name": "what the detector saw (COCO class such as person, car; or a city class)",
    "code": "the event code the class means, if any (empty otherwise)",
    "score": "the detector's score, 0–1",
    "track_id": "camera/track: the same object across frames (empty: not yet confirmed)",
    "x1": "box left edge, pixels of the original frame",
    "y1": "box top edge",
    "x2": "box right edge",
    "y2": "box bottom edge",
}
_INGEST = {
    "ingested_at": "when the worker took the record (UTC)",
    "ingest_latency_ms": "broker accepting the message -> the worker taking it",
    "report_delay_s": "the source's own timestamp -> the worker (delays before Kafka)",
    "warnings": "place fields that could not be checked (e.g. unknown_street)",
    "schema_version": "wire schema version of the record",
}
_PLACE = {
    "district": "canonical district (aliases such as 西海岸新区 resolved to 黄岛区)",
    "street": "street (街道) or town (镇)",
    "road": "road named by the source",
    "location_type": "kind of place (main_road, residential, park_square, ...)",
    "lon": "longitude (WGS84), when the source gave one",
    "lat": "latitude (WGS84), when the source gave one",
}


_PII_TYPES = (
    "kinds of personal data masked in the text (phone, landline, id_card, plate, "
    "bank_card, email, name)"
)


@dataclass(frozen=True, slots=True)
class ViewDoc:
    name: str
    row: str  # what one row is
    columns: dict[str, str]


CATALOGUE: tuple[ViewDoc, ...] = (
    ViewDoc(
        "city_events",
        "one structured city-management event (grid inspector, camera, sensor), once",
        {
            "event_id": "the source's id",
            "source": "grid_inspector, camera, sensor, hotline or other",
            "reported_at": "when the source reported it (UTC)",
            **{k: _INGEST[k] for k in ("ingested_at", "ingest_latency_ms", "report_delay_s")},
            **{k: _PLACE[k] for k in ("district", "street", "road")},
            "address": "free-text address, normalised",
            **{k: _PLACE[k] for k in ("location_type", "lon", "lat")},
            "code": "taxonomy code when the source classified it (GB/T 30428.2, A01..K03)",
            "event_class": "the code's class (市容环境, 街面秩序, ...)",
            "event_name": "the code's name",
            "urgency": "critical, urgent or normal (response times in the domain file)",
            "description": "the report's text, normalised, personal data masked",
            "reporter_id": "inspector or device id",
            **{k: _INGEST[k] for k in ("warnings", "schema_version")},
            **_KAFKA,
            "pii_types": _PII_TYPES,
            "camera_id": "the camera, for a camera's event (empty otherwise)",
            "detected_class": "what the camera's detector saw (person, car, …)",
            "confidence": "the detector's mean score for it (NULL: not a camera's event)",
            "snapshot_uri": "the frame with faces and plates blurred (empty: none kept)",
        },
    ),
    ViewDoc(
        "citizen_appeals",
        "one citizen appeal (12345 hotline, app, WeChat, web, letter), once",
        {
            "appeal_id": "the channel's id",
            "channel": "hotline_12345, app, wechat, web, letter or other",
            "received_at": "when the channel received it (UTC)",
            **{k: _INGEST[k] for k in ("ingested_at", "ingest_latency_ms", "report_delay_s")},
            "text": "the appeal's text, normalised, personal data masked ([手机号], 王某, ...)",
            "text_chars": "the original text's length in characters",
            "district": _PLACE["district"],
            "address": "free-text address given with the appeal (masked like the text)",
            "has_caller_contact": "1 if a name or phone was given (only the admin-only raw "
            "table keeps them)",
            **{k: _INGEST[k] for k in ("warnings", "schema_version")},
            **_KAFKA,
            "pii_types": _PII_TYPES,
            "urgency": "critical, urgent or normal, from the text (danger words, vulnerable "
            "people, repeated calls) and the event type",
            "urgency_reasons": "what raised the urgency",
            "sentiment": "negative, neutral or positive",
            "sentiment_score": "-1 (angry) .. 1 (grateful)",
            "repeat_complaint": "1 if the caller says an earlier report was not handled",
            "content_flags": "abusive or sensitive content found (abuse, threat, self_harm, "
            "discrimination, sensitive, bribery)",
            "screen_score": "the content screen's score, 0..1 (flagged from 0.5)",
        },
    ),
    ViewDoc(
        "video_frames",
        "one captured frame's reference (the image lives in an object store), once",
        {
            "frame_id": "the frame's id",
            "camera_id": "the camera's id",
            "captured_at": "when the frame was captured (UTC)",
            **{k: _INGEST[k] for k in ("ingested_at", "ingest_latency_ms", "report_delay_s")},
            "seq": "frame number within the camera's stream",
            "uri": "where the image is",
            "width": "pixels",
            "height": "pixels",
            "content_type": "image/jpeg or image/png",
            **{k: _PLACE[k] for k in ("district", "street", "road", "location_type", "lon", "lat")},
            **{k: _INGEST[k] for k in ("warnings", "schema_version")},
            **_KAFKA,
        },
    ),
    ViewDoc(
        "dead_letters",
        "one message no stage could process, with why and its original bytes",
        {
            "source_topic": "where the message came from",
            "source_partition": "its partition",
            "source_offset": "its offset",
            "error_kind": "typed reason (invalid_field, unknown_place, processing_error, ...)",
            "reason": "what was wrong, naming the field",
            "original_b64": "the original message value, base64 (replayable once repaired)",
            "key_b64": "the original key, base64",
            "failed_at": "when it failed (UTC)",
            "processor": "the stage that refused it (ingest, dispatch)",
        },
    ),
    ViewDoc(
        "dispatch_decisions",
        "the dispatch decision for one event or appeal (its latest, if decided twice)",
        {
            "input_id": "the event's or appeal's id",
            "input_kind": "city_event or citizen_appeal",
            "channel": "how the report arrived: the appeal's channel or the event's source",
            "text": "the report's text (its first 1000 characters), for the dispatcher",
            "code": "event type chosen (taxonomy code); empty when no model answered",
            "event_name": "the code's name",
            "urgency": "the code's urgency",
            "route": "the rule's unit template: D:<department>, S (street office) or U:<utility>",
            "unit": "the unit dispatched to; empty when the place did not settle it",
            "district": "district found in the report",
            "street": "street or town found in the report",
            "road": "road found in the report",
            "place": "named place found in the report (a square, a residential compound...)",
            "location_type": "kind of place found in the report",
            "confidence": "calibrated probability that the unit is right (0..1)",
            "auto": "1: sent to dispatch.orders automatically; 0: to a dispatcher's review",
            "review_reasons": "why it went to review (low_confidence, street_unknown, ...)",
            "alt_units": "the next best units (or routes), best first",
            "alt_codes": "their event types",
            "alt_confidences": "their calibrated confidences",
            "unresolved": "address parts that could not be settled, with the reason",
            "model_versions": "JSON: version of each model used",
            "backend": "what ran the models (triton-grpc, onnxruntime, ...)",
            "queue_ms": "Kafka -> the dispatch agent taking the report",
            "address_ms": "address analysis, per report",
            "features_ms": "featurising, per report",
            "inference_ms": "both models, for the report's batch",
            "decide_ms": "the rule and the decision, per report",
            "total_ms": "Kafka -> decision ready to publish",
            "received_at": "when the report was made (UTC)",
            "respond_by": "when the unit must have it: received_at + the urgency's response "
            "time (UTC; decisions stored before it was kept: received_at)",
            "decided_at": "when it was decided (UTC)",
            "decided_at_ms": "the same, epoch milliseconds (the latest decision wins)",
            **_KAFKA,
        },
    ),
    ViewDoc(
        "dispatch_feedback",
        "one dispatcher's verdict on a decision",
        {
            "feedback_id": "the verdict's id",
            "input_id": "the event or appeal it is about",
            "verdict": "confirmed or corrected",
            "unit": "the right unit, in the dispatcher's judgement",
            "code": "the right event type, when given",
            "dispatcher_id": "who gave it",
            "given_at": "when (UTC)",
            "auto": "1 if the judged decision was automatic, 0 if a dispatcher's review; "
            "NULL when the verdict did not say (older verdicts)",
            "decided_unit": "the unit the decision named (empty: none, or not said)",
            "received_at": "when the report was made (UTC; NULL when not said)",
            "respond_by": "the report's deadline (UTC; NULL when not said)",
            **_KAFKA,
        },
    ),
    ViewDoc(
        "dispatch_outcomes",
        "a decision with the dispatcher's latest verdict on it (empty when none yet)",
        {
            "input_id": "the event's or appeal's id",
            "decided_at": "when it was decided (UTC)",
            "district": "district found in the report",
            "code": "event type chosen",
            "auto": "1 if dispatched automatically",
            "decided_unit": "the unit decided",
            "confidence": "its calibrated confidence",
            "correct_unit": "the unit the dispatcher named (empty: no verdict yet)",
            "verdict": "confirmed, corrected, or empty",
        },
    ),
    ViewDoc(
        "dispatch_quality",
        "one day of dispatch: automation and, where dispatchers judged, accuracy",
        {
            "day": "the day decided (UTC)",
            "decisions": "decisions made",
            "auto_dispatched": "of them, dispatched automatically",
            "auto_rate": "auto_dispatched / decisions",
            "with_feedback": "decisions a dispatcher gave a verdict on",
            "auto_with_feedback": "automatic ones with a verdict",
            "auto_correct": "automatic ones whose unit the dispatcher confirmed",
            "auto_accuracy": "auto_correct / auto_with_feedback (nan when none judged)",
        },
    ),
    ViewDoc(
        "reports_hourly",
        "one hour received x district x event type x channel x unit: distinct reports",
        {
            "hour": "the hour the reports were received (UTC, start of the hour)",
            "district": "district found in the report",
            "code": "event type chosen (empty: no model answered)",
            "event_name": "the code's name",
            "channel": "how the reports arrived",
            "unit": "the unit decided (empty: none)",
            "reports": "distinct reports (a decision stored twice counts once)",
            "auto_dispatched": "of them, dispatched automatically",
            "auto_due": "reports dispatched automatically that have a deadline (decisions "
            "stored before deadlines were recorded have none and are left out)",
            "auto_in_time": "of those, decided by their deadline (respond_by)",
        },
    ),
    ViewDoc(
        "places_hourly",
        "one hour received x place x event type: distinct reports",
        {
            "hour": "the hour the reports were received (UTC, start of the hour)",
            "district": "district found in the report",
            "street": "street or town found in the report",
            "location": "the named place, else the road (empty: neither found)",
            "code": "event type chosen",
            "reports": "distinct reports",
        },
    ),
    ViewDoc(
        "feedback_hourly",
        "one hour received x final unit x how decided: distinct reports given a verdict",
        {
            "hour": "the hour the reports were received (UTC; the verdict's hour when the "
            "verdict did not say)",
            "unit": "the unit named by the verdict (the right one)",
            "decision": "1: the decision was automatic; 0: a dispatcher's review; -1: unknown",
            "judged": "distinct reports with a verdict",
            "confirmed": "of them, with a confirmation",
            "corrected": "of them, with a correction",
            "dispatcher_due": "reviewed reports with a dispatcher's verdict and a deadline",
            "dispatched_in_time": "reviewed reports whose verdict came by their deadline",
        },
    ),
    ViewDoc(
        "model_audit",
        "one output of one model for one report (every model call is audited)",
        {
            "input_id": "the report the model saw",
            "model": "model name (event_classifier, dispatch_router, ...)",
            "version": "model version (a hash of its weights)",
            "input_hash": "SHA-256 of the (masked) text the model saw",
            "output": "what it answered (JSON)",
            "backend": "what ran it (triton-grpc, onnxruntime, ...)",
            "processor": "the stage that called it (dispatch, ...)",
            "produced_at": "when (UTC)",
            "produced_at_ms": "when, in milliseconds (one row per output)",
            **_KAFKA,
        },
    ),
    ViewDoc(
        "case_links",
        "one decided report and the case it belongs to (duplicates share a case)",
        {
            "input_id": "the report",
            "case_id": "its case: the id of the case's first report",
            "merge_key": "district and merge class the report was compared within",
            "merged": "1: it joined an open case; 0: it opened one",
            "reporters": "reports in the case when this report was linked",
            "absorbed": "cases this report showed to be the same problem (folded into it)",
            "relinked": "1: linked again because its case was folded into another",
            "district": "district of the report",
            "code": "event code decided for the report",
            "event_name": "its name",
            "place_level": "how specific the case's place is: name, crossing, number, road, "
            "street",
            "place": "the case's most specific place (a 小区, a crossing, road and number)",
            "reported_at": "when the report came in (UTC)",
            "linked_at": "when it was linked (UTC)",
            "linked_at_ms": "when, in milliseconds",
            **_KAFKA,
        },
    ),
    ViewDoc(
        "cases",
        "one case: the reports about one problem at one place within its window",
        {
            "case_id": "the id of the case's first report",
            "district": "district",
            "place_level": "how specific its place is",
            "place": "its most specific place",
            "codes": "event codes its reports were given",
            "event_names": "their names",
            "reports": "how many reports (callers, inspectors) it has",
            "first_reported": "its first report (UTC)",
            "last_reported": "its latest report (UTC)",
            "input_ids": "its reports",
        },
    ),
    ViewDoc(
        "hotspots",
        "a place that kept producing cases, raised once per place and day",
        {
            "hotspot_id": "district, place and the day it was raised",
            "district": "district",
            "place_level": "how specific the place is",
            "place": "the place",
            "cases": "cases there within the rule's days (default: 3 or more in 7 days)",
            "first_day": "first local day counted",
            "last_day": "last local day counted (the day it was raised)",
            "case_ids": "the cases (at most 50, the latest)",
            "raised_at": "when it was raised (UTC)",
            "raised_at_ms": "when, in milliseconds",
            **_KAFKA,
        },
    ),
    ViewDoc(
        "frame_detections",
        "one camera frame the vision stage processed, its detections as parallel arrays",
        {
            "frame_id": "the camera and the capture time in milliseconds",
            "camera_id": "the camera",
            "seq": "the camera's frame number (restarts with its source)",
            "captured_at": "when the frame was captured (UTC)",
            "captured_at_ms": "when, in milliseconds",
            "processed_at": "when the vision stage processed it (UTC)",
            "width": "frame width in pixels",
            "height": "frame height in pixels",
            "model": "the detector and its backend",
            "snapshot_uri": "the frame with faces and plates blurred (empty: none kept)",
            "latency_ms": "detector time per frame in its batch",
            **_DETECTION,
            **_KAFKA,
        },
    ),
    ViewDoc(
        "vision_detections",
        "one object a camera's frame showed (frame_detections, one row per detection)",
        {
            "frame_id": "the frame (see frame_detections)",
            "camera_id": "the camera",
            "seq": "the camera's frame number",
            "captured_at": "when the frame was captured (UTC)",
            "model": "the detector and its backend",
            "snapshot_uri": "the frame's blurred snapshot (empty: none kept)",
            **_DETECTION,
        },
    ),
    ViewDoc(
        "case_embeddings",
        "one dispatched report as a point for similar-case search (its latest decision), "
        "once",
        {
            "case_id": "the report's case (reports about one problem share it; the "
            "report's own id until linked)",
            "input_id": "the report (event_id or appeal_id)",
            "input_kind": "city_event or citizen_appeal",
            "code": "event type decided (GB/T 30428.2 code)",
            "event_name": "the code's name",
            "district": "district found in the report (empty: not found)",
            "street": "street or town found in the report",
            "unit": "the unit it was dispatched to (empty: the place did not settle it)",
            "auto": "1: dispatched automatically; 0: sent to a dispatcher",
            "text": "the report's text, personal data masked",
            "reported_at": "when the report was made (UTC)",
            "decided_at": "when it was decided (UTC)",
            "decided_at_ms": "when, in milliseconds (the latest decision's row is kept)",
            "embedding": "case_embedder's vector: 64 Float32, unit length (cosine = dot "
            "product; all zeros for a text with no letters)",
            "model_version": "the case_embedder version that made it (rows of other "
            "versions are not comparable)",
        },
    ),
)


def view_doc(name: str) -> ViewDoc | None:
    return next((v for v in CATALOGUE if v.name == name), None)
