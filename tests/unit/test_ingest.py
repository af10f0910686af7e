"""ingest(): from the bytes of a Kafka message to a ClickHouse row or a dead letter."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest

from processors.ingest import PROCESSOR, IngestContext, StoredRow, ingest
from schemas.errors import DeadLetter, ErrorKind
from streams.settings import Settings
from streams.topics import kinds_by_topic

from .factories import (
    KAFKA_TS,
    RECEIVED_AT,
    citizen_appeal,
    city_event,
    encode,
    message,
    names_field,
    video_frame,
    without,
)


def _row(result: StoredRow | DeadLetter) -> StoredRow:
    assert isinstance(result, StoredRow), result
    return result


def _dead(result: StoredRow | DeadLetter) -> DeadLetter:
    assert isinstance(result, DeadLetter), result
    return result


# --- city events -----------------------------------------------------------------------


def test_city_event_row(ctx):
    stored = _row(ingest(message(encode(city_event())), ctx, RECEIVED_AT))
    assert stored.table == "city_events_log"
    assert stored.record_id == "EV-2026-0001"
    row = stored.row
    assert row["event_id"] == "EV-2026-0001"
    assert row["source"] == "grid_inspector"
    assert row["district"] == "市南区"
    assert row["location_type"] == "main_road"
    assert (row["lon"], row["lat"]) == (120.38, 36.06)
    assert row["description"] == "路边有暴露垃圾"
    assert row["warnings"] == []
    assert row["schema_version"] == 1
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        "city.events",
        3,
        4217,
    )


def test_city_event_enriched_from_taxonomy(ctx):
    event_type = ctx.domain.event_types["A01"]
    row = _row(ingest(message(encode(city_event(code="A01"))), ctx, RECEIVED_AT)).row
    assert row["code"] == "A01"
    assert row["event_class"] == event_type.event_class == "市容环境"
    assert row["event_name"] == event_type.name == "暴露垃圾"
    assert row["urgency"] == event_type.urgency
    assert row["urgency"] in ctx.domain.urgency_minutes


@pytest.mark.parametrize("code", ["A01", "A02", "A03"])
def test_each_code_enriches_its_own_type(ctx, code):
    row = _row(ingest(message(encode(city_event(code=code))), ctx, RECEIVED_AT)).row
    assert row["event_name"] == ctx.domain.event_types[code].name


def test_city_event_without_code_has_empty_enrichment(ctx):
    row = _row(ingest(message(encode(without(city_event(), "code"))), ctx, RECEIVED_AT)).row
    assert (row["code"], row["event_class"], row["event_name"], row["urgency"]) == ("", "", "", "")


def test_datetimes_stored_as_naive_utc(ctx):
    rec = city_event(reported_at="2026-11-26T08:30:00+08:00")
    row = _row(ingest(message(encode(rec)), ctx, RECEIVED_AT)).row
    assert row["reported_at"] == datetime(2026, 11, 26, 0, 30, 0)
    assert row["reported_at"].tzinfo is None
    assert row["ingested_at"] == datetime(2026, 11, 26, 0, 30, 5)
    assert row["ingested_at"].tzinfo is None


def test_timings(ctx):
    rec = city_event(reported_at="2026-11-26T08:30:00+08:00")
    row = _row(ingest(message(encode(rec), timestamp=KAFKA_TS), ctx, RECEIVED_AT)).row
    assert row["ingest_latency_ms"] == pytest.approx(250.0)
    assert row["report_delay_s"] == pytest.approx(5.0)


def test_timings_are_zone_independent(ctx):
    a = city_event(reported_at="2026-11-26T08:30:00+08:00")
    b = city_event(reported_at="2026-11-26T00:30:00Z")
    row_a = _row(ingest(message(encode(a)), ctx, RECEIVED_AT)).row
    row_b = _row(ingest(message(encode(b)), ctx, RECEIVED_AT)).row
    assert row_a["reported_at"] == row_b["reported_at"]
    assert row_a["report_delay_s"] == row_b["report_delay_s"]


def test_place_canonicalised_in_event_row(ctx):
    rec = city_event(district="西海岸新区", street=None, road=None)
    row = _row(ingest(message(encode(rec)), ctx, RECEIVED_AT)).row
    assert row["district"] == "黄岛区"


def test_street_implies_district_and_warnings_kept(ctx):
    rec = city_event(district="崂山区", street="八大关街道办事处", road="不存在路")
    row = _row(ingest(message(encode(rec)), ctx, RECEIVED_AT)).row
    assert row["district"] == "市南区"
    assert row["street"] == "八大关街道"
    assert row["road"] == "不存在路"
    assert row["warnings"] == ["district_conflicts_with_street", "unknown_road"]


def test_event_text_fields_normalised(ctx):
    rec = city_event(
        description="\u3000井盖\u200b丢失，编号１２３\r\n\r\n请处理 ", address="香港中路１号"
    )
    row = _row(ingest(message(encode(rec)), ctx, RECEIVED_AT)).row
    assert row["description"] == "井盖丢失,编号123\n请处理"
    assert row["address"] == "香港中路1号"


def test_empty_optional_fields_become_empty_strings(ctx):
    rec = without(city_event(), "district", "location_type", "code")
    row = _row(ingest(message(encode(rec)), ctx, RECEIVED_AT)).row
    assert row["district"] == row["street"] == row["road"] == row["address"] == ""
    assert row["location_type"] == row["reporter_id"] == ""


def test_unknown_taxonomy_code(ctx):
    assert "Z99" not in ctx.domain.event_types
    dead = _dead(ingest(message(encode(city_event(code="Z99"))), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.UNKNOWN_CODE
    assert "Z99" in dead.reason


@pytest.mark.parametrize("location_type", ["highway", "MAIN_ROAD", "主次干道", ""])
def test_invalid_location_type(ctx, location_type):
    assert location_type not in ctx.domain.location_types
    dead = _dead(ingest(message(encode(city_event(location_type=location_type))), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.INVALID_FIELD
    assert "location_type" in dead.reason


@pytest.mark.parametrize("location_type", ["main_road", "back_street", "residential", "village"])
def test_valid_location_types(ctx, location_type):
    assert location_type in ctx.domain.location_types
    row = _row(ingest(message(encode(city_event(location_type=location_type))), ctx, RECEIVED_AT))
    assert row.row["location_type"] == location_type


def test_unknown_district_is_dead_letter(ctx):
    dead = _dead(ingest(message(encode(city_event(district="海淀区"))), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.UNKNOWN_PLACE
    assert "海淀区" in dead.reason


def test_oversize_description_is_dead_letter(ctx):
    rec = city_event(description="字" * (ctx.max_text_chars + 1))
    dead = _dead(ingest(message(encode(rec)), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.OVERSIZE
    assert "description" in dead.reason


def test_blank_description_is_dead_letter(ctx):
    dead = _dead(ingest(message(encode(city_event(description=" \u3000\u200b"))), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.INVALID_FIELD
    assert "description" in dead.reason


# --- citizen appeals ----------------------------------------------------------------------


def test_appeal_row(ctx):
    msg = message(encode(citizen_appeal()), "citizen.appeals")
    stored = _row(ingest(msg, ctx, RECEIVED_AT))
    assert stored.table == "citizen_appeals_log"
    assert stored.record_id == "AP-2026-0001"
    row = stored.row
    assert row["appeal_id"] == "AP-2026-0001"
    assert row["channel"] == "hotline_12345"
    assert row["district"] == "黄岛区"  # from the alias 西海岸新区
    assert row["received_at"] == datetime(2026, 11, 26, 0, 29)
    assert row["report_delay_s"] == pytest.approx(65.0)
    assert row["ingest_latency_ms"] == pytest.approx(250.0)
    assert row["text"] == "小区门口垃圾三天没人清理"
    assert row["text_chars"] == len(row["text"])
    assert row["kafka_topic"] == "citizen.appeals"


def test_appeal_row_holds_no_personal_data(ctx):
    name, phone = "张三丰", "13912345678"
    msg = message(encode(citizen_appeal(caller_name=name, caller_phone=phone)), "citizen.appeals")
    row = _row(ingest(msg, ctx, RECEIVED_AT)).row
    assert row["has_caller_contact"] == 1
    assert not any("caller" in key and key != "has_caller_contact" for key in row)
    dumped = repr(row)
    assert name not in dumped
    assert phone not in dumped
    assert phone not in json.dumps(row, default=str, ensure_ascii=False)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"caller_name": "李四"}, 1),
        ({"caller_phone": "0532-12345"}, 1),
        ({"caller_name": "李四", "caller_phone": "0532-12345"}, 1),
        ({}, 0),
        ({"caller_name": "", "caller_phone": ""}, 0),
    ],
)
def test_has_caller_contact(ctx, fields, expected):
    rec = {**without(citizen_appeal(), "caller_name", "caller_phone"), **fields}
    row = _row(ingest(message(encode(rec), "citizen.appeals"), ctx, RECEIVED_AT)).row
    assert row["has_caller_contact"] == expected


def test_appeal_text_normalised_and_counted(ctx):
    rec = citizen_appeal(text="  我家楼下\u3000\u3000噪音扰民，电话打不通１２３ \r\n\r\n谢谢 ")
    row = _row(ingest(message(encode(rec), "citizen.appeals"), ctx, RECEIVED_AT)).row
    assert row["text"] == "我家楼下 噪音扰民,电话打不通123\n谢谢"
    assert row["text_chars"] == len("我家楼下 噪音扰民,电话打不通123\n谢谢")


def test_appeal_without_district(ctx):
    rec = without(citizen_appeal(), "district")
    row = _row(ingest(message(encode(rec), "citizen.appeals"), ctx, RECEIVED_AT)).row
    assert row["district"] == ""
    assert row["warnings"] == []


# --- video frames ---------------------------------------------------------------------------


def test_video_frame_row(ctx):
    msg = message(encode(video_frame()), "frames.refs", key=b"cam-7")
    stored = _row(ingest(msg, ctx, RECEIVED_AT))
    assert stored.table == "video_frames_log"
    assert stored.record_id == "cam-7:000123"
    row = stored.row
    assert row["camera_id"] == "cam-7"
    assert row["captured_at"] == datetime(2026, 11, 26, 0, 30, 0, 250000)
    assert row["report_delay_s"] == pytest.approx(4.75)
    assert (row["seq"], row["width"], row["height"]) == (123, 1920, 1080)
    assert row["content_type"] == "image/jpeg"
    assert row["district"] == "崂山区"


# --- wrong topic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "rec"),
    [
        ("city.events", citizen_appeal()),
        ("city.events", video_frame()),
        ("citizen.appeals", city_event()),
        ("frames.refs", city_event()),
        ("unknown.topic", city_event()),
        (
            "city.events",
            {
                "kind": "frame_detections",
                "schema_version": 1,
                "frame_id": "f1",
                "camera_id": "c1",
                "seq": 0,
                "captured_at": "2026-11-20T08:00:00+08:00",
                "width": 10,
                "height": 10,
                "model": "nanodet",
                "processed_at": "2026-11-20T08:00:01+08:00",
                "detections": [{"box": [0, 0, 1, 1], "class_name": "person", "score": 0.9}],
            },
        ),
    ],
)
def test_wrong_topic(ctx, topic, rec):
    dead = _dead(ingest(message(encode(rec), topic), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.WRONG_TOPIC
    assert rec["kind"] in dead.reason
    assert topic in dead.reason


def test_topic_prefix_is_honoured(ctx):
    prefixed = IngestContext(
        domain=ctx.domain,
        kinds_by_topic=kinds_by_topic(Settings(topic_prefix="test7.")),
        max_text_chars=ctx.max_text_chars,
        max_message_bytes=ctx.max_message_bytes,
    )
    ok = ingest(message(encode(city_event()), "test7.city.events"), prefixed, RECEIVED_AT)
    assert isinstance(ok, StoredRow)
    dead = _dead(ingest(message(encode(city_event()), "city.events"), prefixed, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.WRONG_TOPIC


# --- dead letters ---------------------------------------------------------------------------


BAD_VALUES = [
    (b"", ErrorKind.EMPTY),
    (b"{", ErrorKind.MALFORMED_JSON),
    (b"\xff\xfe\x00{", ErrorKind.UNDECODABLE),
    ('{"text":"青岛"}'.encode("gbk"), ErrorKind.UNDECODABLE),
    (b"[1, 2]", ErrorKind.NOT_AN_OBJECT),
    (b"7", ErrorKind.NOT_AN_OBJECT),
    (encode(city_event(kind="parking_ticket")), ErrorKind.UNKNOWN_KIND),
    (encode(city_event(schema_version=2)), ErrorKind.UNSUPPORTED_VERSION),
    (encode(city_event(schema_version="1")), ErrorKind.INVALID_FIELD),
    (encode(without(city_event(), "event_id")), ErrorKind.INVALID_FIELD),
    (encode(city_event(reported_at="2026-11-26T08:30:00")), ErrorKind.INVALID_FIELD),
    (encode(city_event(code="Z99")), ErrorKind.UNKNOWN_CODE),
    (encode(city_event(district="朝阳区")), ErrorKind.UNKNOWN_PLACE),
    (encode(citizen_appeal()), ErrorKind.WRONG_TOPIC),
]


@pytest.mark.parametrize(("value", "kind"), BAD_VALUES)
def test_dead_letter_carries_source_and_original(ctx, value, kind):
    key = "市南区".encode()
    msg = message(value, "city.events", partition=5, offset=987654321, key=key)
    dead = _dead(ingest(msg, ctx, RECEIVED_AT))
    assert dead.error_kind is kind
    assert dead.reason
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == (
        "city.events",
        5,
        987654321,
    )
    assert dead.original == value  # byte for byte
    assert dead.key == key
    assert dead.failed_at == RECEIVED_AT
    assert dead.processor == PROCESSOR == "ingest"


def test_dead_letter_for_missing_value_and_key(ctx):
    dead = _dead(ingest(message(None, key=None), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.EMPTY
    assert dead.original == b""
    assert dead.key is None
    wire = dead.to_wire()
    assert wire["original_b64"] == ""
    assert wire["key_b64"] is None


def test_oversize_message_is_dead_letter(ctx):
    value = encode(city_event(description="x" * ctx.max_message_bytes))
    dead = _dead(ingest(message(value), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.OVERSIZE
    assert dead.original == value


@pytest.mark.parametrize(("value", "kind"), BAD_VALUES)
def test_dead_letter_wire_round_trips_original(ctx, value, kind):
    key = b"\x00\xffkey"
    dead = _dead(ingest(message(value, key=key), ctx, RECEIVED_AT))
    wire = dead.to_wire()
    wire = json.loads(json.dumps(wire))  # JSON-serialisable as it is
    assert wire["kind"] == "dead_letter"
    assert wire["schema_version"] == 1
    assert base64.b64decode(wire["original_b64"], validate=True) == value
    assert base64.b64decode(wire["key_b64"], validate=True) == key
    assert wire["error_kind"] == kind.value
    assert wire["reason"] == dead.reason
    assert wire["source_topic"] == "city.events"
    assert (wire["source_partition"], wire["source_offset"]) == (3, 4217)
    assert datetime.fromisoformat(wire["failed_at"]) == RECEIVED_AT
    assert wire["processor"] == "ingest"


def test_dead_letter_reason_names_the_field(ctx):
    dead = _dead(ingest(message(encode(city_event(lat=95))), ctx, RECEIVED_AT))
    assert dead.error_kind is ErrorKind.INVALID_FIELD
    assert names_field(dead.reason, "lat")


@pytest.mark.parametrize(
    "reported_at",
    [
        "0001-01-01T00:00:00+08:00",  # before datetime.min once converted to UTC
        "9999-12-31T23:59:59-08:00",  # after datetime.max once converted to UTC
    ],
)
def test_timestamp_out_of_range_after_utc_conversion_is_a_dead_letter(ctx, reported_at):
    # ingest() promises never to raise for bad input.
    result = ingest(message(encode(city_event(reported_at=reported_at))), ctx, RECEIVED_AT)
    dead = _dead(result)
    assert dead.error_kind is ErrorKind.INVALID_FIELD
    assert "reported_at" in dead.reason


def test_dead_letters_of_other_stages_are_stored_and_junk_on_that_topic_never_loops(ctx):
    import base64
    import dataclasses

    from processors.ingest import DEAD_LETTERS_TABLE

    store_ctx = dataclasses.replace(ctx, kinds_by_topic={"dl": "dead_letter"})
    letter = {"kind": "dead_letter", "schema_version": 1, "source_topic": "frames.raw",
              "source_partition": 2, "source_offset": 7, "error_kind": "invalid_field",
              "reason": "frame image: the JPEG does not decode",
              "original_b64": base64.b64encode(b"\xff\xd8x").decode(), "key_b64": None,
              "failed_at": "2026-11-20T08:00:00+08:00", "processor": "vision"}
    stored = ingest(message(encode(letter), "dl"), store_ctx, RECEIVED_AT)
    assert isinstance(stored, StoredRow) and stored.table == DEAD_LETTERS_TABLE
    assert (stored.row["source_topic"], stored.row["source_offset"], stored.row["processor"]) == (
        "frames.raw", 7, "vision")
    for junk in (b"not json", encode({**letter, "failed_at": "yesterday"}), b""):
        row = ingest(message(junk, "dl"), store_ctx, RECEIVED_AT)
        assert isinstance(row, StoredRow) and row.row["source_topic"] == "dl"
        assert row.row["reason"].startswith("an unreadable dead letter")
