"""Wire schemas: every way a record can be valid or wrong, with the reason naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.errors import ErrorKind, RecordError
from schemas.records import (
    CitizenAppeal,
    CityEvent,
    VideoFrameRef,
    parse_record,
    to_wire,
    utc_naive,
)

from .factories import citizen_appeal, city_event, names_field, video_frame, without

BUILDERS = {"city_event": city_event, "citizen_appeal": citizen_appeal, "video_frame": video_frame}


def _error(obj: object) -> RecordError:
    with pytest.raises(RecordError) as info:
        parse_record(obj)
    return info.value


# --- valid records -------------------------------------------------------------------


def test_city_event_parses():
    rec = parse_record(city_event())
    assert isinstance(rec, CityEvent)
    assert rec.event_id == "EV-2026-0001"
    assert rec.code == "A01"
    assert rec.reported_at == datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    assert rec.reported_at.utcoffset() == timedelta(hours=8)


def test_citizen_appeal_parses():
    rec = parse_record(citizen_appeal())
    assert isinstance(rec, CitizenAppeal)
    assert rec.channel == "hotline_12345"
    assert rec.caller_phone == "13912345678"


def test_video_frame_parses_with_default_content_type():
    rec = parse_record(video_frame())
    assert isinstance(rec, VideoFrameRef)
    assert (rec.seq, rec.width, rec.height) == (123, 1920, 1080)
    assert rec.content_type == "image/jpeg"
    assert rec.captured_at.microsecond == 250000


@pytest.mark.parametrize(
    "rec",
    [
        city_event(code=None, district=None, location_type=None, lon=None, lat=None),
        without(city_event(), "code", "district", "location_type", "lon", "lat"),
        without(citizen_appeal(), "caller_name", "caller_phone", "district"),
        video_frame(content_type="image/png", seq=0, width=16384, height=1),
        city_event(lon=-180, lat=90),
        city_event(lon=180.0, lat=-90.0),
        city_event(lon=120, lat=36),  # integers are fine for coordinates
        city_event(event_id="a" * 64),
        city_event(event_id="A.b_c:d-1"),
        city_event(reported_at="2026-11-26T00:30:00Z"),
        city_event(reported_at="2026-11-26T00:30:00+00:00"),
        city_event(reported_at="2026-11-25T19:30:00-05:00"),
    ],
)
def test_valid_variants_parse(rec):
    parsed = parse_record(rec)
    assert parsed.kind == rec["kind"]


def test_to_wire_round_trips():
    rec = parse_record(city_event())
    again = parse_record(to_wire(rec))
    assert again == rec
    assert to_wire(rec)["reported_at"] == "2026-11-26T08:30:00+08:00"
    assert "reporter_id" not in to_wire(rec)  # None fields are left out


def test_utc_naive_converts_then_drops_zone():
    ts = datetime(2026, 11, 26, 8, 30, tzinfo=timezone(timedelta(hours=8)))
    out = utc_naive(ts)
    assert out == datetime(2026, 11, 26, 0, 30)
    assert out.tzinfo is None


# --- not an object / kind / version --------------------------------------------------


@pytest.mark.parametrize("obj", [[], [city_event()], 42, 1.5, "city_event", None, True])
def test_not_an_object(obj):
    err = _error(obj)
    assert err.kind is ErrorKind.NOT_AN_OBJECT
    assert type(obj).__name__ in err.reason


@pytest.mark.parametrize(
    "kind", ["unknown", "City_Event", "", None, 1, ["city_event"], {"a": 1}, "dead_letter"]
)
def test_unknown_kind(kind):
    err = _error(city_event(kind=kind))
    assert err.kind is ErrorKind.UNKNOWN_KIND
    assert repr(kind) in err.reason


def test_missing_kind():
    err = _error(without(city_event(), "kind"))
    assert err.kind is ErrorKind.UNKNOWN_KIND


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_missing_schema_version(kind):
    err = _error(without(BUILDERS[kind](), "schema_version"))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert "schema_version" in err.reason


@pytest.mark.parametrize("version", ["1", True, False, 1.0, None, [1]])
def test_schema_version_of_wrong_type(version):
    err = _error(city_event(schema_version=version))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert "schema_version" in err.reason


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("version", [0, 2, 99, -1])
def test_unsupported_schema_version(kind, version):
    err = _error(BUILDERS[kind](schema_version=version))
    assert err.kind is ErrorKind.UNSUPPORTED_VERSION
    assert str(version) in err.reason
    assert kind in err.reason


# --- missing fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("city_event", "event_id"),
        ("city_event", "source"),
        ("city_event", "reported_at"),
        ("city_event", "description"),
        ("citizen_appeal", "appeal_id"),
        ("citizen_appeal", "channel"),
        ("citizen_appeal", "received_at"),
        ("citizen_appeal", "text"),
        ("video_frame", "frame_id"),
        ("video_frame", "camera_id"),
        ("video_frame", "captured_at"),
        ("video_frame", "seq"),
        ("video_frame", "uri"),
        ("video_frame", "width"),
        ("video_frame", "height"),
    ],
)
def test_missing_required_field_is_named(kind, field):
    err = _error(without(BUILDERS[kind](), field))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert f"{field}: required field is missing" in err.reason


def test_several_missing_fields_are_all_named():
    err = _error(without(city_event(), "event_id", "description"))
    assert names_field(err.reason, "event_id")
    assert names_field(err.reason, "description")


# --- wrong types and values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        # numbers sent as strings
        ("video_frame", "seq", "123"),
        ("video_frame", "width", "1920"),
        ("city_event", "lon", "120.38"),
        ("city_event", "lat", "36.06"),
        # strings sent as numbers
        ("city_event", "event_id", 12345),
        ("city_event", "description", 42),
        ("citizen_appeal", "text", 3.14),
        ("citizen_appeal", "caller_phone", 13912345678),
        ("city_event", "district", 370202),
        # bools where numbers belong
        ("video_frame", "seq", True),
        ("video_frame", "height", False),
        ("city_event", "lon", True),
        # floats where ints belong
        ("video_frame", "width", 1920.0),
        # containers
        ("city_event", "description", ["a"]),
        ("city_event", "district", {"name": "市南区"}),
        # enumerations
        ("city_event", "source", "satellite"),
        ("citizen_appeal", "channel", "telegram"),
        ("video_frame", "content_type", "image/gif"),
        # patterns and limits
        ("city_event", "code", "a01"),
        ("city_event", "code", "A1"),
        ("city_event", "code", "A001"),
        ("city_event", "district", "区" * 201),
        ("city_event", "address", "路" * 501),
        ("video_frame", "seq", -1),
        ("video_frame", "width", 0),
        ("video_frame", "width", 16385),
        ("video_frame", "height", -5),
        ("video_frame", "uri", ""),
        ("video_frame", "uri", "x" * 1001),
    ],
)
def test_wrong_type_or_value_is_named(kind, field, value):
    err = _error(BUILDERS[kind](**{field: value}))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, field), err.reason


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("extra", ["foo", "eventId", "caller_id_number", "Kind"])
def test_unknown_extra_field(kind, extra):
    err = _error(BUILDERS[kind](**{extra: "x"}))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert f"{extra}: unknown field" in err.reason


def test_appeal_refuses_fields_of_other_kinds():
    err = _error(citizen_appeal(street="八大关街道"))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert "street: unknown field" in err.reason


# --- timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-26T08:30:00",  # no UTC offset
        "2026-11-26 08:30:00",
        "2026-11-26",
        "08:30:00+08:00",
        "yesterday",
        "",
        "2026-13-01T00:00:00+08:00",
        "2026-11-26T25:00:00+08:00",
    ],
)
def test_timestamp_without_offset_or_invalid(ts):
    err = _error(city_event(reported_at=ts))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, "reported_at"), err.reason


@pytest.mark.parametrize("ts", [1764117000, 1764117000000, 1764117000.5, True, None])
def test_timestamp_as_epoch_number_is_refused(ts):
    err = _error(city_event(reported_at=ts))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, "reported_at")
    if ts is not None:
        assert "ISO 8601" in err.reason


@pytest.mark.parametrize("field", ["received_at"])
def test_appeal_timestamp_as_number_is_refused(field):
    err = _error(citizen_appeal(**{field: 1764117000}))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, field)


@pytest.mark.parametrize("ts", ["1764117000", "1764117000000", "1764117000.5"])
def test_timestamp_as_epoch_in_a_string_is_refused(ts):
    # An epoch is ambiguous (s or ms?) whether or not it comes quoted; the schema
    # promises "an ISO 8601 string with a UTC offset".
    err = _error(city_event(reported_at=ts))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, "reported_at")


# --- ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", "EV 0001", "事件0001", "a/b", "a\nb", "id#1", "a" * 65, "x" * 1000],
)
@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("city_event", "event_id"),
        ("citizen_appeal", "appeal_id"),
        ("video_frame", "frame_id"),
        ("video_frame", "camera_id"),
    ],
)
def test_invalid_or_too_long_id(kind, field, value):
    err = _error(BUILDERS[kind](**{field: value}))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, field), err.reason


# --- coordinates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("city_event", "lon", 180.0001),
        ("city_event", "lon", -181),
        ("city_event", "lat", 90.5),
        ("city_event", "lat", -91),
        ("video_frame", "lon", 1e6),
        ("video_frame", "lat", -90.000001),
    ],
)
def test_coordinates_out_of_range(kind, field, value):
    err = _error(BUILDERS[kind](**{field: value}))
    assert err.kind is ErrorKind.INVALID_FIELD
    assert names_field(err.reason, field), err.reason


def test_error_str_carries_kind_and_reason():
    err = _error(without(city_event(), "event_id"))
    assert str(err) == f"invalid_field: {err.reason}"
    assert isinstance(err, ValueError)
