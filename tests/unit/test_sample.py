"""sample_records: a seeded demo stream; deterministic, every kind and district, a few bad."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from processors.ingest import IngestContext, StoredRow, ingest
from schemas.domain import Domain
from schemas.errors import RecordError
from schemas.records import parse_record
from streams.sample import json_lines, sample_records

from .factories import RECEIVED_AT, encode, message

NOW = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)


def _sample(domain: Domain, count: int = 200, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("seed", 7)
    kw.setdefault("run_id", "run42")
    kw.setdefault("now", NOW)
    out = list(sample_records(domain, count, **kw))
    assert all(isinstance(r, dict) for r in out)
    return out  # type: ignore[return-value]


def _id(rec: dict[str, Any]) -> str:
    return rec.get("event_id") or rec["appeal_id"]


def test_same_seed_same_records(domain: Domain) -> None:
    assert _sample(domain, invalid_every=10) == _sample(domain, invalid_every=10)


def test_another_seed_other_records(domain: Domain) -> None:
    assert _sample(domain, seed=1) != _sample(domain, seed=2)


def test_count_is_respected(domain: Domain) -> None:
    assert len(_sample(domain, 0)) == 0
    assert len(_sample(domain, 37)) == 37


def test_ids_carry_the_run_id_and_are_unique(domain: Domain) -> None:
    recs = _sample(domain, 300, run_id="demo-x1", invalid_every=10)
    ids = [_id(r) for r in recs]
    assert all(i.startswith("demo-x1-") for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("count", "every"), [(100, 10), (250, 10), (40, 4)])
def test_invalid_every_breaks_exactly_every_nth_record(
    domain: Domain, count: int, every: int
) -> None:
    recs = _sample(domain, count, invalid_every=every)
    bad = sorted(int(_id(r).rsplit("-bad", 1)[1]) for r in recs if "-bad" in _id(r))
    assert len(recs) == count
    assert bad == list(range(every - 1, count, every))


def test_records_come_in_report_time_order_with_the_bursts_among_them(domain: Domain) -> None:
    from datetime import datetime, timedelta

    from streams.sample import sample_records

    truth: dict[str, dict[str, str]] = {}
    recs = list(sample_records(domain, 200, seed=3, run_id="r", span=timedelta(hours=24),
                               truth=truth, bursts=10))
    times = [r.get("reported_at") or r["received_at"] for r in recs]
    assert times == sorted(times, key=datetime.fromisoformat)
    burst_ids = [_id(r) for r in recs if _id(r).startswith(("r-ba", "r-be"))]
    assert len(recs) == 200 + len(burst_ids) and len(burst_ids) >= 20
    incidents = [truth[i]["incident"] for i in burst_ids]
    # Ten incidents (and their near misses: another problem, or the same one days later),
    # several reports each: duplicates to merge.
    main = {i for i in incidents if i.count("-") == 1}
    assert len(main) == 10 and sum(1 for i in incidents if i in main) > 20


def test_no_invalid_records_by_default(domain: Domain) -> None:
    recs = _sample(domain, 300)
    assert not any("-bad" in _id(r) for r in recs)


def test_every_valid_record_parses(domain: Domain) -> None:
    for rec in _sample(domain, 300, invalid_every=10):
        if "-bad" in _id(rec):
            continue
        parsed = parse_record(rec)
        assert parsed.kind == rec["kind"]


def test_every_invalid_record_is_refused(domain: Domain, ctx: IngestContext) -> None:
    recs = [r for r in _sample(domain, 400, invalid_every=5) if "-bad" in _id(r)]
    assert len(recs) == 80
    for rec in recs:
        topic = "city.events" if rec["kind"] == "city_event" else "citizen.appeals"
        result = ingest(message(encode(rec), topic), ctx, RECEIVED_AT)
        assert not isinstance(result, StoredRow), rec
    # The unknown district passes parse_record and is caught by ingest; the others fail parsing.
    parse_failures = 0
    for rec in recs:
        try:
            parse_record(rec)
        except RecordError:
            parse_failures += 1
    assert parse_failures >= 1


def test_every_valid_record_is_ingested(domain: Domain, ctx: IngestContext) -> None:
    for rec in _sample(domain, 300, invalid_every=10):
        if "-bad" in _id(rec):
            continue
        topic = "city.events" if rec["kind"] == "city_event" else "citizen.appeals"
        result = ingest(message(encode(rec), topic), ctx, NOW)
        assert isinstance(result, StoredRow), (rec, result)


def test_both_kinds_and_every_district_appear(domain: Domain) -> None:
    recs = _sample(domain, 500)
    kinds = Counter(r["kind"] for r in recs)
    assert set(kinds) == {"city_event", "citizen_appeal"}
    # Inspectors' events name their district when the report settles it.
    districts = {r.get("district") for r in recs if r["kind"] == "city_event"} - {None}
    assert districts == set(domain.districts)


def test_timestamps_are_at_most_ten_minutes_old(domain: Domain) -> None:
    for rec in _sample(domain, 100):
        stamp = datetime.fromisoformat(rec.get("reported_at") or rec["received_at"])
        assert stamp.utcoffset() is not None
        assert 0 <= (NOW - stamp).total_seconds() <= 600


def test_json_lines_are_the_records_without_absent_fields(domain: Domain) -> None:
    records = list(sample_records(domain, 50, seed=3, run_id="r"))
    lines = list(json_lines(records))
    assert [orjson.loads(line) for line in lines] == [
        {k: v for k, v in r.items() if v is not None} for r in records
    ]
    # The case that matters: an absent (None) field is left out, not sent as null.
    assert orjson.loads(next(json_lines([{"a": 1, "district": None}]))) == {"a": 1}
