"""Where the ingest stage keeps a record with a warning instead of dead-lettering it."""

from __future__ import annotations

import orjson

from processors.ingest import IngestContext, StoredRow, ingest
from schemas.errors import DeadLetter, ErrorKind
from tests.unit.factories import RECEIVED_AT, citizen_appeal, city_event, message


def _ingest(ctx: IngestContext, topic: str, record: dict) -> StoredRow | DeadLetter:
    return ingest(message(orjson.dumps(record), topic=topic), ctx, RECEIVED_AT)


def test_appeal_with_unknown_district_is_kept_with_a_warning(ctx: IngestContext) -> None:
    out = _ingest(ctx, "citizen.appeals", citizen_appeal(district="火星区"))
    assert isinstance(out, StoredRow)
    assert out.row["district"] == ""
    assert out.row["warnings"] == ["unknown_district"]


def test_city_event_with_unknown_district_is_a_dead_letter(ctx: IngestContext) -> None:
    out = _ingest(ctx, "city.events", city_event(district="火星区", street=None))
    assert isinstance(out, DeadLetter)
    assert out.error_kind is ErrorKind.UNKNOWN_PLACE


def test_blank_address_means_no_address(ctx: IngestContext) -> None:
    out = _ingest(ctx, "city.events", city_event(address=" \u3000\t "))
    assert isinstance(out, StoredRow)
    assert out.row["address"] == ""
