"""The topic catalogue and message keys."""

from __future__ import annotations

import math

import pytest

from schemas.records import SUPPORTED_VERSIONS
from streams.settings import Settings
from streams.topics import (
    CATALOGUE,
    CITIZEN_APPEALS,
    CITY_EVENTS,
    DEAD_LETTERS,
    FRAMES_RAW,
    INGEST_SOURCES,
    VIDEO_FRAMES,
    kinds_by_topic,
    message_key,
    spec_for_kind,
    stored_groups,
    topic_configs,
)


def test_catalogue_names_unique():
    names = [s.name for s in CATALOGUE]
    assert len(names) == len(set(names))


def test_ingest_sources_are_in_catalogue():
    assert set(INGEST_SOURCES) <= set(CATALOGUE)
    assert DEAD_LETTERS in CATALOGUE


@pytest.mark.parametrize("spec", INGEST_SOURCES, ids=lambda s: s.name)
def test_every_ingest_source_has_a_known_kind(spec):
    assert spec.kind
    assert spec.kind in SUPPORTED_VERSIONS
    assert spec_for_kind(spec.kind) is spec
    assert spec.key_fields


def test_ingest_source_kinds_unique():
    kinds = [s.kind for s in INGEST_SOURCES]
    assert len(kinds) == len(set(kinds))


@pytest.mark.parametrize("kind", ["dead_letter", "dispatch_decision", "nope"])
def test_spec_for_kind_only_knows_input_kinds(kind):
    with pytest.raises(KeyError):
        spec_for_kind(kind)


@pytest.mark.parametrize(
    ("spec", "record", "expected"),
    [
        (CITY_EVENTS, {"district": "市南区", "event_id": "e1"}, "市南区".encode()),
        (CITY_EVENTS, {"event_id": "e1"}, b"e1"),
        (CITY_EVENTS, {"district": "", "event_id": "e1"}, b"e1"),
        (CITY_EVENTS, {"district": None, "event_id": "e1"}, b"e1"),
        (CITY_EVENTS, {"district": 370202, "event_id": "e1"}, b"e1"),
        (CITIZEN_APPEALS, {"district": "黄岛区", "appeal_id": "a1"}, "黄岛区".encode()),
        (CITIZEN_APPEALS, {"appeal_id": "a1"}, b"a1"),
        (VIDEO_FRAMES, {"camera_id": "cam-7", "district": "市南区"}, b"cam-7"),
    ],
)
def test_message_key(spec, record, expected):
    assert message_key(spec, record) == expected


@pytest.mark.parametrize(
    ("spec", "record"),
    [(CITY_EVENTS, {}), (CITY_EVENTS, {"district": "", "event_id": ""}), (VIDEO_FRAMES, {"x": 1})],
)
def test_message_key_none_when_no_field(spec, record):
    assert message_key(spec, record) is None


def test_same_district_same_key():
    a = message_key(CITY_EVENTS, {"district": "崂山区", "event_id": "e1"})
    b = message_key(CITY_EVENTS, {"district": "崂山区", "event_id": "e2"})
    assert a == b


def test_kinds_by_topic_uses_prefix():
    mapping = kinds_by_topic(Settings(topic_prefix="dev."))
    assert mapping == {
        "dev.city.events": "city_event",
        "dev.citizen.appeals": "citizen_appeal",
        "dev.frames.refs": "video_frame",
        "dev.dispatch.orders": "dispatch_decision",
        "dev.dispatch.review": "dispatch_decision",
        "dev.dispatch.feedback": "dispatch_feedback",
        "dev.dispatch.cases": "case_link",
        "dev.city.hotspots": "hotspot",
        "dev.vision.detections": "frame_detections",
        "dev.citystream.dead_letters": "dead_letter",
    }


def test_stored_groups_in_pipeline_order():
    groups = stored_groups(Settings(topic_prefix="t.", consumer_group="g"))
    assert list(groups) == ["g", "g.cases", "g.decisions"]
    assert groups["g.cases"] == ["t.dispatch.orders", "t.dispatch.review"]
    assert groups["g.decisions"] == [
        "t.dispatch.orders", "t.dispatch.review", "t.dispatch.cases", "t.city.hotspots",
        "t.vision.detections", "t.citystream.dead_letters",
    ]
    off = stored_groups(Settings(topic_prefix="t.", consumer_group="g", cases_enabled=False))
    assert list(off) == ["g", "g.decisions"]  # no case stage: nothing to wait for there
    # A vision stage feeds the worker's agents (camera events) and the store: it goes first.
    vision = stored_groups(Settings(topic_prefix="t.", consumer_group="g", vision_enabled=True))
    assert list(vision) == ["g.vision", "g", "g.cases", "g.decisions"]
    assert vision["g.vision"] == ["t.frames.raw", "t.frames.refs"]


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_topic_configs(spec):
    cfg = topic_configs(spec)
    assert cfg["retention.ms"] == str(spec.retention_ms)
    assert int(cfg["max.message.bytes"]) == spec.max_message_bytes
    assert cfg["cleanup.policy"] in {"delete", "compact"}


@pytest.mark.parametrize("spec", (*INGEST_SOURCES, FRAMES_RAW), ids=lambda s: s.name)
def test_dead_letter_topic_holds_the_largest_source_message(spec):
    # The dead letter carries the original base64-encoded plus metadata.
    largest = spec.max_message_bytes
    encoded = 4 * math.ceil(largest / 3)
    assert encoded + 8 * 1024 <= DEAD_LETTERS.max_message_bytes
