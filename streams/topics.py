"""The topic catalogue: every topic's name, partitions, retention and key, in one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.settings import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    description: str
    # Record kind carried (matches the wire ``kind``); None for mixed/internal topics.
    kind: str | None
    # Record fields tried in order for the message key. District first: one
    # district's events then stay ordered on one partition and meet in one worker.
    key_fields: tuple[str, ...]
    retention_ms: int
    max_message_bytes: int = 1024 * 1024
    compact: bool = False


CITY_EVENTS = TopicSpec(
    "city.events",
    "structured city-management events (grid inspectors, cameras, sensors)",
    "city_event",
    ("district", "event_id"),
    14 * DAY_MS,
)
CITIZEN_APPEALS = TopicSpec(
    "citizen.appeals",
    "citizen appeals in free text (12345 hotline, app, letters)",
    "citizen_appeal",
    ("district", "appeal_id"),
    14 * DAY_MS,
)
VIDEO_FRAMES = TopicSpec(
    "frames.refs",
    "references to captured video frames (JPEG in an object store)",
    "video_frame",
    ("camera_id",),
    3 * DAY_MS,
)
FRAMES_RAW = TopicSpec(
    "frames.raw",
    "camera frames with their JPEG inline (`citystream frames`; a CSF1 envelope: a "
    "video_frame header, then the image)",
    None,  # not a JSON record: the vision stage decodes the envelope itself
    ("camera_id",),
    1 * DAY_MS,  # frames are large and only the detections are kept
    # A 1080p JPEG at quality 85 is 0.2-0.6 MB; 4K frames go by reference (frames.refs).
    max_message_bytes=2 * 1024 * 1024,
)
VISION_DETECTIONS = TopicSpec(
    "vision.detections",
    "what the vision stage found in each frame, tracked (a frame with nothing is a record)",
    "frame_detections",
    # Keyed like frames.raw, with as many partitions: a camera's frames and its detections
    # share a partition number, which is what the stage's rebuild reads back.
    ("camera_id",),
    7 * DAY_MS,
)
DISPATCH_ORDERS = TopicSpec(
    "dispatch.orders",
    "automatically dispatched decisions",
    "dispatch_decision",
    ("district", "input_id"),
    30 * DAY_MS,
)
DISPATCH_REVIEW = TopicSpec(
    "dispatch.review",
    "decisions waiting for a dispatcher",
    "dispatch_decision",
    ("district", "input_id"),
    30 * DAY_MS,
)
DISPATCH_FEEDBACK = TopicSpec(
    "dispatch.feedback",
    "dispatchers' confirmations and corrections",
    "dispatch_feedback",
    ("input_id",),
    90 * DAY_MS,
)
DISPATCH_CASES = TopicSpec(
    "dispatch.cases",
    "each decided report's case: duplicates of one problem at one place share a case",
    "case_link",
    ("district", "input_id"),
    30 * DAY_MS,
)
HOTSPOTS = TopicSpec(
    "city.hotspots",
    "places that keep producing cases (raised once per place and day)",
    "hotspot",
    ("district", "place"),
    90 * DAY_MS,
)
DEAD_LETTERS = TopicSpec(
    "citystream.dead_letters",
    "messages no stage could process, with the reason and the original bytes",
    "dead_letter",
    ("source_topic",),
    30 * DAY_MS,
    # Holds the original message (base64: 4/3 of it) plus its reason: a whole frame of
    # frames.raw at its 2 MB limit must fit.
    max_message_bytes=3 * 1024 * 1024,
)

CATALOGUE: tuple[TopicSpec, ...] = (
    CITY_EVENTS,
    CITIZEN_APPEALS,
    VIDEO_FRAMES,
    FRAMES_RAW,
    VISION_DETECTIONS,
    DISPATCH_ORDERS,
    DISPATCH_REVIEW,
    DISPATCH_FEEDBACK,
    DISPATCH_CASES,
    HOTSPOTS,
    DEAD_LETTERS,
)
INGEST_SOURCES: tuple[TopicSpec, ...] = (CITY_EVENTS, CITIZEN_APPEALS, VIDEO_FRAMES)
# What the dispatch stage reads, and what it writes.
DISPATCH_SOURCES: tuple[TopicSpec, ...] = (CITY_EVENTS, CITIZEN_APPEALS)
DISPATCH_OUTPUTS: tuple[TopicSpec, ...] = (DISPATCH_ORDERS, DISPATCH_REVIEW)
# What the decision store keeps (its own consumer group): decisions and their cases.
# Dead letters too: stages without a warehouse (vision) publish theirs only there.
DECISION_STORE_TOPICS: tuple[TopicSpec, ...] = (
    *DISPATCH_OUTPUTS, DISPATCH_CASES, HOTSPOTS, VISION_DETECTIONS, DEAD_LETTERS
)
# Everything the sink stores in ClickHouse: inputs, decisions, cases, hotspots, feedback.
STORED_TOPICS: tuple[TopicSpec, ...] = (
    *INGEST_SOURCES, *DECISION_STORE_TOPICS, DISPATCH_FEEDBACK
)
# What the worker's Faust agents read (the worker's own consumer group); decisions are
# stored by a plain consumer of their own group (one per decision, at hundreds a
# second, Faust's per-message work cost a quarter of the worker's CPU).
AGENT_TOPICS: tuple[TopicSpec, ...] = (*INGEST_SOURCES, DISPATCH_FEEDBACK)


def decisions_group(settings: Settings) -> str:
    """The consumer group that stores decisions (beside the worker's own group)."""
    return f"{settings.consumer_group}.decisions"


def vision_group(settings: Settings) -> str:
    """The consumer group that runs the detector over frames.raw."""
    return f"{settings.consumer_group}.vision"


def cases_group(settings: Settings) -> str:
    """The consumer group that links decisions to cases."""
    return f"{settings.consumer_group}.cases"


def stored_groups(settings: Settings) -> dict[str, list[str]]:
    """Consumer group -> the topics it consumes: zero lag on all of them means every input,
    decision, case link and verdict so far is in ClickHouse. In pipeline order: a stage
    commits its input only after its outputs are published, so each group's lag is read
    after the groups that feed it."""
    groups: dict[str, list[str]] = {}
    if settings.vision_enabled:
        # First: its city events feed the worker's agents, its detections the store.
        groups[vision_group(settings)] = [
            settings.topic(FRAMES_RAW.name), settings.topic(VIDEO_FRAMES.name)
        ]
    groups[settings.consumer_group] = [settings.topic(s.name) for s in AGENT_TOPICS]
    if settings.cases_enabled:
        groups[cases_group(settings)] = [settings.topic(s.name) for s in DISPATCH_OUTPUTS]
    groups[decisions_group(settings)] = [
        settings.topic(s.name) for s in DECISION_STORE_TOPICS
    ]
    return groups


def spec_for_kind(kind: str) -> TopicSpec:
    for spec in INGEST_SOURCES:
        if spec.kind == kind:
            return spec
    raise KeyError(f"no input topic carries records of kind {kind!r}")


def message_key(spec: TopicSpec, record: dict[str, object]) -> bytes | None:
    for field in spec.key_fields:
        value = record.get(field)
        if isinstance(value, str) and value:
            return value.encode("utf-8")
    return None


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    return {
        "retention.ms": str(spec.retention_ms),
        "max.message.bytes": str(spec.max_message_bytes),
        "cleanup.policy": "compact" if spec.compact else "delete",
    }


def kinds_by_topic(
    settings: Settings, specs: Iterable[TopicSpec] = STORED_TOPICS
) -> dict[str, str]:
    return {settings.topic(s.name): s.kind for s in specs if s.kind}
