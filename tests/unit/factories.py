"""Builders for wire records and Kafka messages shared by the unit tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from processors.ingest import SourceMessage

RECEIVED_AT = datetime(2026, 11, 26, 0, 30, 5, tzinfo=UTC)  # 08:30:05 in Qingdao (+08:00)
KAFKA_TS = datetime(2026, 11, 26, 0, 30, 4, 750000, tzinfo=UTC)  # 250 ms before RECEIVED_AT


def city_event(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "city_event",
        "schema_version": 1,
        "event_id": "EV-2026-0001",
        "source": "grid_inspector",
        "reported_at": "2026-11-26T08:30:00+08:00",
        "description": "路边有暴露垃圾",
        "code": "A01",
        "district": "市南区",
        "location_type": "main_road",
        "lon": 120.38,
        "lat": 36.06,
    }
    rec.update(overrides)
    return rec


def citizen_appeal(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "citizen_appeal",
        "schema_version": 1,
        "appeal_id": "AP-2026-0001",
        "channel": "hotline_12345",
        "received_at": "2026-11-26T08:29:00+08:00",
        "text": "小区门口垃圾三天没人清理",
        "caller_name": "张三丰",
        "caller_phone": "13912345678",
        "district": "西海岸新区",
    }
    rec.update(overrides)
    return rec


def video_frame(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "video_frame",
        "schema_version": 1,
        "frame_id": "cam-7:000123",
        "camera_id": "cam-7",
        "captured_at": "2026-11-26T08:30:00.250+08:00",
        "seq": 123,
        "uri": "s3://frames/cam-7/000123.jpg",
        "width": 1920,
        "height": 1080,
        "district": "崂山区",
    }
    rec.update(overrides)
    return rec


def without(rec: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in fields}


def encode(rec: object) -> bytes:
    return json.dumps(rec, ensure_ascii=False).encode("utf-8")


def message(
    value: bytes | None,
    topic: str = "city.events",
    *,
    partition: int = 3,
    offset: int = 4217,
    key: bytes | None = "市南区".encode(),
    timestamp: datetime = KAFKA_TS,
) -> SourceMessage:
    return SourceMessage(
        topic=topic, partition=partition, offset=offset, timestamp=timestamp, key=key, value=value
    )


def names_field(reason: str, field: str) -> bool:
    """True when one of the ``loc: message`` parts of a reason is about ``field``."""
    for part in reason.split("; "):
        loc = part.split(":", 1)[0]
        if loc == field or loc.startswith(field + "."):
            return True
    return False
