"""Versioned wire schemas: the three inputs and the outputs later stages publish.

JSON on the wire; every record names its ``kind`` and ``schema_version``. Field
types are strict (a number sent as a string is an error, not a guess) and unknown
fields are refused, so a producer's typo surfaces as a dead letter with a reason
instead of a silently missing value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from schemas.errors import ErrorKind, RecordError

SUPPORTED_VERSIONS: dict[str, frozenset[int]] = {
    "city_event": frozenset({1}),
    "citizen_appeal": frozenset({1}),
    "video_frame": frozenset({1}),
    "dispatch_decision": frozenset({1}),
    "dispatch_feedback": frozenset({1}),
    "case_link": frozenset({1}),
    "hotspot": frozenset({1}),
    "frame_detections": frozenset({1}),
}


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# ClickHouse DateTime holds 1970..2106; anything outside is a producer's bug.
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(2105, 12, 31, tzinfo=UTC)


def _iso_string(value: Any) -> Any:
    # Epoch numbers are ambiguous (s or ms?) and naive strings lack a zone: refuse both.
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError(
            "must be an ISO 8601 string with a UTC offset, e.g. 2026-11-26T08:30:00+08:00"
        )
    return value


def _in_storable_range(value: datetime) -> datetime:
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError("must lie between 1970 and 2105")
    return value


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_iso_string), AfterValidator(_in_storable_range)
]
RECORD_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
RecordId = Annotated[StrictStr, Field(pattern=RECORD_ID_PATTERN)]
ShortText = Annotated[StrictStr, Field(max_length=200)]
Longitude = Annotated[StrictFloat | StrictInt, Field(ge=-180, le=180)]
Latitude = Annotated[StrictFloat | StrictInt, Field(ge=-90, le=90)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: StrictInt


class _Located(_Wire):
    district: ShortText | None = None
    street: ShortText | None = None
    road: ShortText | None = None
    address: Annotated[StrictStr, Field(max_length=500)] | None = None
    location_type: ShortText | None = None
    lon: Longitude | None = None
    lat: Latitude | None = None


class CityEvent(_Located):
    """A structured city-management event: grid inspector, camera rule, sensor."""

    kind: Literal["city_event"]
    event_id: RecordId
    source: Literal["grid_inspector", "camera", "sensor", "hotline", "other"]
    reported_at: Timestamp
    description: StrictStr
    code: Annotated[StrictStr, Field(pattern=r"^[A-Z][0-9]{2}$")] | None = None
    reporter_id: ShortText | None = None
    # A camera's evidence (source "camera"): which camera, what it saw, how sure the
    # detector was, and the frame with faces and plates blurred.
    camera_id: RecordId | None = None
    detected_class: Annotated[StrictStr, Field(max_length=100)] | None = None
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    snapshot_uri: Annotated[StrictStr, Field(max_length=1000)] | None = None


class CitizenAppeal(_Wire):
    """A citizen's appeal in free Chinese text (12345 hotline, app, letter...)."""

    kind: Literal["citizen_appeal"]
    appeal_id: RecordId
    channel: Literal["hotline_12345", "app", "wechat", "web", "letter", "other"]
    received_at: Timestamp
    text: StrictStr
    # Personal data: accepted on the wire, never stored by the ingest stage.
    caller_name: ShortText | None = None
    caller_phone: ShortText | None = None
    district: ShortText | None = None
    address: Annotated[StrictStr, Field(max_length=500)] | None = None


class VideoFrameRef(_Located):
    """A reference to a captured frame (the JPEG itself lives in an object store)."""

    kind: Literal["video_frame"]
    frame_id: RecordId
    camera_id: RecordId
    captured_at: Timestamp
    seq: Annotated[StrictInt, Field(ge=0)]
    uri: Annotated[StrictStr, Field(min_length=1, max_length=1000)]
    width: Annotated[StrictInt, Field(gt=0, le=16384)]
    height: Annotated[StrictInt, Field(gt=0, le=16384)]
    content_type: Literal["image/jpeg", "image/png"] = "image/jpeg"


class Alternative(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    unit: StrictStr  # the unit, or the route (e.g. "S") when the place does not settle it
    route: StrictStr
    code: StrictStr
    confidence: Annotated[float, Field(ge=0, le=1)]


ReviewReason = Literal[
    "low_confidence",
    "district_unknown",
    "street_unknown",
    "place_conflict",
    "outside_city",
    "no_model",
]


class DispatchDecision(_Wire):
    """Output of the dispatch stage (published to dispatch.orders / dispatch.review).

    ``unit`` is None only on the review queue, when the place does not settle it."""

    kind: Literal["dispatch_decision"]
    input_id: RecordId
    input_kind: Literal["city_event", "citizen_appeal"]
    channel: StrictStr | None = None
    text: StrictStr = ""
    code: StrictStr
    event_name: StrictStr
    urgency: StrictStr
    route: StrictStr
    unit: StrictStr | None = None
    district: StrictStr | None = None
    street: StrictStr | None = None
    road: StrictStr | None = None
    place: StrictStr | None = None
    location_type: StrictStr | None = None
    confidence: Annotated[float, Field(ge=0, le=1)]
    auto: bool
    review_reasons: tuple[ReviewReason, ...] = ()
    alternatives: tuple[Alternative, ...] = ()
    unresolved: tuple[StrictStr, ...] = ()
    model_versions: dict[str, str] = Field(default_factory=dict)
    backend: StrictStr
    # Milliseconds per step: queue (Kafka to agent), address, features, inference, decide.
    latency_ms: dict[str, float] = Field(default_factory=dict)
    received_at: Timestamp
    # When the unit must have it: received_at plus the urgency level's response time.
    respond_by: Timestamp | None = None
    decided_at: Timestamp


class DispatchFeedback(_Wire):
    """A verdict on a decision: a dispatcher confirming or correcting it on the board, or a
    unit accepting an order or returning a mis-dispatched one.

    The decision's own facts travel with the verdict (``auto``, ``decided_unit``,
    ``received_at``, ``respond_by``) so accuracy and response-time aggregates can be kept
    by a materialized view over feedback alone, without a join at read time."""

    kind: Literal["dispatch_feedback"]
    feedback_id: RecordId
    input_id: RecordId
    verdict: Literal["confirmed", "corrected"]
    unit: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    code: Annotated[StrictStr, Field(pattern=r"^[A-Z][0-9]{2}$")] | None = None
    dispatcher_id: ShortText
    given_at: Timestamp
    auto: bool | None = None
    decided_unit: StrictStr | None = None
    received_at: Timestamp | None = None
    respond_by: Timestamp | None = None


class CaseLink(_Wire):
    """A report's case: the reports about one problem at one place within a window share
    a case (the first report's id). ``absorbed``: cases found to be this one too.

    The report's own facts travel with the link (district, code, time, the case's most
    specific place) so cases and hotspots are views over links alone. A report whose case
    was later folded into another gets a second link (``relinked``) naming the new case."""

    kind: Literal["case_link"]
    input_id: RecordId
    case_id: RecordId
    merge_key: Annotated[StrictStr, Field(max_length=200)]
    merged: bool
    reporters: Annotated[int, Field(ge=1)]
    absorbed: tuple[RecordId, ...] = ()
    linked_at: Timestamp
    district: StrictStr | None = None
    code: StrictStr = ""
    event_name: StrictStr = ""
    # The case's most specific place as its reports gave it: a level (name, crossing,
    # number, road, street) and a label such as 香港中路18号.
    place_level: StrictStr = ""
    place: Annotated[StrictStr, Field(max_length=200)] = ""
    reported_at: Timestamp | None = None
    relinked: bool = False


class HotspotAlert(_Wire):
    """A place that keeps producing cases: ``cases`` cases there from ``first_day`` to
    ``last_day`` (local days), at least the rule's minimum. One id per place and day, so
    raising it again that day replaces it."""

    kind: Literal["hotspot"]
    hotspot_id: Annotated[StrictStr, Field(min_length=1, max_length=300)]
    district: StrictStr
    place_level: StrictStr
    place: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    cases: Annotated[int, Field(ge=1)]
    first_day: StrictStr
    last_day: StrictStr
    case_ids: tuple[RecordId, ...] = ()
    raised_at: Timestamp


class DetectedObject(BaseModel):
    """One object in a frame: a box in the original image's pixels, the detector's class
    (and the city event code it maps to, if any), its score, and the track it belongs to
    (None: not yet confirmed by the tracker)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box: tuple[float, float, float, float]
    class_name: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    code: Annotated[StrictStr, Field(pattern=r"^[A-Z][0-9]{2}$")] | None = None
    score: Annotated[float, Field(ge=0, le=1)]
    track_id: Annotated[StrictStr, Field(max_length=100)] | None = None


class DetectedFrame(_Wire):
    """What the vision stage found in one frame (nothing found is a record too). The
    snapshot, when there is one, is the frame with faces and plates blurred."""

    kind: Literal["frame_detections"]
    frame_id: RecordId
    camera_id: RecordId
    seq: Annotated[StrictInt, Field(ge=0)]
    captured_at: Timestamp
    width: Annotated[StrictInt, Field(gt=0, le=16384)]
    height: Annotated[StrictInt, Field(gt=0, le=16384)]
    model: Annotated[StrictStr, Field(max_length=200)]
    detections: Annotated[tuple[DetectedObject, ...], Field(max_length=1000)] = ()
    snapshot_uri: Annotated[StrictStr, Field(max_length=1000)] | None = None
    processed_at: Timestamp
    latency_ms: Annotated[float, Field(ge=0)] = 0.0


InputRecord = CityEvent | CitizenAppeal | VideoFrameRef
Record = (
    InputRecord | DispatchDecision | DispatchFeedback | CaseLink | HotspotAlert | DetectedFrame
)

_MODELS: dict[str, type[Record]] = {
    "city_event": CityEvent,
    "citizen_appeal": CitizenAppeal,
    "video_frame": VideoFrameRef,
    "dispatch_decision": DispatchDecision,
    "dispatch_feedback": DispatchFeedback,
    "case_link": CaseLink,
    "hotspot": HotspotAlert,
    "frame_detections": DetectedFrame,
}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "record"
        if err["type"] == "missing":
            parts.append(f"{where}: required field is missing")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_record(obj: object) -> Record:
    """Validate one decoded JSON value as a wire record; raise ``RecordError`` with the reason."""
    if not isinstance(obj, dict):
        raise RecordError(
            ErrorKind.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}"
        )
    kind = obj.get("kind")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise RecordError(ErrorKind.UNKNOWN_KIND, f"kind {kind!r} is not one of {sorted(_MODELS)}")
    version = obj.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordError(ErrorKind.INVALID_FIELD, "schema_version: required integer is missing")
    if version not in SUPPORTED_VERSIONS[kind]:
        raise RecordError(
            ErrorKind.UNSUPPORTED_VERSION,
            f"{kind} schema_version {version} is not supported "
            f"(supported: {sorted(SUPPORTED_VERSIONS[kind])})",
        )
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise RecordError(ErrorKind.INVALID_FIELD, _describe(exc)) from exc


def to_wire(record: Record) -> dict[str, Any]:
    """The JSON-ready dict of a record (timestamps as ISO strings)."""
    return record.model_dump(mode="json", exclude_none=True)


def utc_naive(ts: datetime) -> datetime:
    """ClickHouse ``DateTime`` columns hold UTC; drop the zone after converting."""
    return ts.astimezone(UTC).replace(tzinfo=None)
