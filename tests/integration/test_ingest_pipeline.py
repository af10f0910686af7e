"""Messages produced to the real broker, through the real worker, into ClickHouse."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from pipeline import replay_records

from infra.services import ClickHouseServer, free_ports
from infra.worker_process import worker_ready
from schemas.domain import Domain
from streams.clickhouse import ServerWarehouse
from streams.kafka_admin import (
    client_config,
    consumer_lag,
    create_topics,
    producer,
    wait_for_zero_lag,
    wait_until_stored,
)
from streams.sample import json_lines, sample_records
from streams.settings import Settings
from streams.topics import CITY_EVENTS, DEAD_LETTERS, INGEST_SOURCES

pytestmark = pytest.mark.integration


def _sample(settings: Settings, count: int, invalid_every: int, run_id: str) -> list[Any]:
    """The sample as ``make run`` sends it, decoded again to know what to expect."""
    domain = Domain.load(settings.domain_file)
    records = sample_records(domain, count, seed=7, run_id=run_id, invalid_every=invalid_every)
    return [orjson.loads(line) for line in json_lines(records)]


def _expected(records: list[Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"city_event": set(), "citizen_appeal": set(), "bad": set()}
    for r in records:
        rid = r.get("event_id") or r.get("appeal_id")
        out["bad" if "-bad" in rid else r["kind"]].add(rid)
    return out


def _source_topics(settings: Settings) -> list[str]:
    return [settings.topic(s.name) for s in INGEST_SOURCES]


def test_sample_stream_lands_in_chdb(settings: Settings, worker_factory: Any) -> None:
    records = _sample(settings, 600, invalid_every=40, run_id="r1")
    # An inspector who picked the category at the scene: enriched from the taxonomy.
    records.append({
        "kind": "city_event", "schema_version": 1, "event_id": "r1-coded",
        "source": "grid_inspector", "reported_at": "2026-11-26T08:00:00+08:00",
        "description": "香港中路路灯不亮", "district": "市南区", "code": "E02",
    })
    expected = _expected(records)
    replay_records(settings, records)
    worker = worker_factory(settings)
    worker.start()
    wait_for_zero_lag(settings, settings.consumer_group, _source_topics(settings), timeout_s=120)

    events = worker.query("SELECT event_id FROM city_events")
    appeals = worker.query("SELECT appeal_id FROM citizen_appeals")
    assert {r["event_id"] for r in events} == expected["city_event"]
    assert {r["appeal_id"] for r in appeals} == expected["citizen_appeal"]
    dead = worker.query("SELECT error_kind, original_b64 FROM dead_letters")
    assert len(dead) == len(expected["bad"])
    originals = {
        json.loads(base64.b64decode(d["original_b64"])).get("event_id")
        or json.loads(base64.b64decode(d["original_b64"])).get("appeal_id")
        for d in dead
    }
    assert originals == expected["bad"]

    # Enrichment came from the domain: the taxonomy's name and urgency for the code.
    domain = Domain.load(settings.domain_file)
    one = next(r for r in records if r["kind"] == "city_event" and "code" in r)
    row = worker.query(
        "SELECT district, event_name, urgency, ingest_latency_ms FROM city_events "
        f"WHERE event_id = '{one['event_id']}'"
    )[0]
    assert row["district"] == one["district"]
    assert row["event_name"] == domain.event_types[one["code"]].name
    assert row["urgency"] == domain.event_types[one["code"]].urgency
    assert row["ingest_latency_ms"] >= 0
    stored_inputs = sum(
        worker.metric("citystream_events_out_total", table=t)
        for t in ("city_events_log", "citizen_appeals_log")
    )
    assert stored_inputs == len(events) + len(appeals)
    assert worker.metric("citystream_dead_letters_total") == len(expected["bad"])


def test_sample_stream_lands_in_clickhouse_server(
    settings: Settings, clickhouse_server: ClickHouseServer, worker_factory: Any
) -> None:
    server_settings = settings.model_copy(update={"clickhouse_url": clickhouse_server.url})
    records = _sample(server_settings, 400, invalid_every=50, run_id="r2")
    expected = _expected(records)
    replay_records(server_settings, records)
    worker = worker_factory(server_settings)
    worker.start()
    wait_until_stored(server_settings, 120)
    warehouse = ServerWarehouse(clickhouse_server.url, server_settings.clickhouse_database)
    try:
        assert warehouse.dialect == "legacy"  # Debian's 18.16
        events = warehouse.query("SELECT event_id, reported_at FROM city_events").dicts()
        appeals = warehouse.query("SELECT appeal_id FROM citizen_appeals").dicts()
        dead = warehouse.query("SELECT count() FROM dead_letters").scalar()
        decided = warehouse.query("SELECT input_id FROM dispatch_decisions").dicts()
        # The dispatch views (a JOIN with an aliased subquery) work on 18.16 too.
        quality = warehouse.query(
            "SELECT sum(decisions) AS n, sum(auto_with_feedback) AS judged FROM dispatch_quality"
        ).dicts()[0]
    finally:
        warehouse.close()
    assert {r["event_id"] for r in events} == expected["city_event"]
    assert {r["appeal_id"] for r in appeals} == expected["citizen_appeal"]
    assert dead == len(expected["bad"])
    assert {r["input_id"] for r in decided} == expected["city_event"] | expected["citizen_appeal"]
    assert (quality["n"], quality["judged"]) == (len(decided), 0)


@pytest.mark.parametrize(
    ("value", "kind", "reason_part"),
    [
        (b"\xff\xfe\x00garbage", "undecodable", "not UTF-8"),
        (b'{"kind": "city_event", "event_id": ', "malformed_json", "not valid JSON"),
        (
            b'{"kind": "city_event", "schema_version": 7, "event_id": "x"}',
            "unsupported_version",
            "schema_version 7",
        ),
        (b'{"kind": "citizen_appeal", "schema_version": 1, "appeal_id": "a1"}', "wrong_topic", ""),
    ],
)
def test_bad_message_lands_in_dead_letter_topic(
    settings: Settings, worker_factory: Any, value: bytes, kind: str, reason_part: str
) -> None:
    create_topics(settings)
    prod = producer(settings)
    topic = settings.topic(CITY_EVENTS.name)
    meta = prod.send(topic, value=value, key=b"k1").get(timeout=30)
    prod.close()
    worker = worker_factory(settings)
    worker.start()

    consumer = KafkaConsumer(
        settings.topic(DEAD_LETTERS.name),
        **client_config(settings),
        auto_offset_reset="earliest",
        consumer_timeout_ms=30000,
        group_id=None,
    )
    try:
        letter = json.loads(next(iter(consumer)).value)
    finally:
        consumer.close()
    assert letter["error_kind"] == kind
    assert reason_part in letter["reason"]
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        topic,
        meta.partition,
        meta.offset,
    )
    assert base64.b64decode(letter["original_b64"]) == value
    assert base64.b64decode(letter["key_b64"]) == b"k1"
    # The bad message is done with: its offset is committed, not retried forever.
    wait_for_zero_lag(settings, settings.consumer_group, [topic], timeout_s=60)


def test_worker_killed_mid_stream_stores_each_event_once(
    settings: Settings, worker_factory: Any, tmp_path: Path
) -> None:
    total = 30_000
    records = _sample(settings, total, invalid_every=0, run_id="crash")
    replay_records(settings, records)
    topics = _source_topics(settings)

    first = worker_factory(settings)
    first.start()
    deadline = time.monotonic() + 120
    while first.metric("citystream_events_out_total") < 3000:
        assert time.monotonic() < deadline, first.log_tail()
        time.sleep(0.05)
    first.kill()  # SIGKILL: no shutdown, no final commit
    lag_after_kill = sum(consumer_lag(settings, settings.consumer_group, topics).values())
    # Mid-stream: rows are stored (>= 3000) and messages are left; those stored but not yet
    # committed come again to the second worker.
    assert 0 < lag_after_kill <= total, "the kill must land mid-stream for this test to mean much"

    second = worker_factory(settings)
    second.start()
    wait_until_stored(settings, 300)
    counts = second.query(
        "SELECT (SELECT count() FROM city_events) + (SELECT count() FROM citizen_appeals) AS rows,"
        " (SELECT uniqExact(event_id) FROM city_events)"
        " + (SELECT uniqExact(appeal_id) FROM citizen_appeals) AS ids,"
        " (SELECT count() FROM dispatch_decisions) AS decisions,"
        " (SELECT uniqExact(input_id) FROM dispatch_decisions) AS decided_ids"
    )[0]
    # Every report stored once and decided once, across the crash.
    assert counts == {"rows": total, "ids": total, "decisions": total, "decided_ids": total}
    assert second.query("SELECT count() AS n FROM dead_letters")[0]["n"] == 0


def test_agent_failure_stops_the_worker_without_committing(
    settings: Settings, worker_factory: Any
) -> None:
    """A batch that cannot be made durable must crash the worker, not leave it idle and up."""
    from kafka.admin import NewTopic

    from streams.kafka_admin import admin_client

    # A dead-letter topic too small for the dead letter: its delivery fails in the agent.
    admin = admin_client(settings)
    admin.create_topics(
        [
            NewTopic(
                settings.topic(DEAD_LETTERS.name), 1, 1, topic_configs={"max.message.bytes": "2000"}
            )
        ]
    )
    admin.close()
    create_topics(settings)
    prod = producer(settings)
    topic = settings.topic(CITY_EVENTS.name)
    prod.send(topic, value=b"\xff" * 5000, key=b"k").get(timeout=30)
    prod.close()

    worker = worker_factory(settings)
    worker.start()
    assert worker.proc is not None
    try:
        code = worker.proc.wait(timeout=60)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"worker kept running:\n{worker.log_tail()}") from exc
    assert code != 0, worker.log_tail()
    assert "ingest agent failed" in worker.log_tail(200)
    # Nothing was acked: the message is still there for the restarted worker.
    assert sum(consumer_lag(settings, settings.consumer_group, [topic]).values()) == 1


def test_clickhouse_outage_holds_offsets_until_rows_are_stored(
    settings: Settings, worker_factory: Any, tmp_path: Path
) -> None:
    """ClickHouse goes away under a running worker: nothing is committed, /readyz fails,
    inserts are retried; when it is back, every event is stored once."""
    tcp_port, http_port = free_ports(2)
    server = ClickHouseServer(tmp_path / "clickhouse", tcp_port, http_port)
    server.start()
    try:
        own = settings.model_copy(
            update={"clickhouse_url": server.url, "sink_retry_max_backoff_s": 1.0}
        )
        worker = worker_factory(own)
        worker.start()  # migrations applied, sink healthy
        server.stop()

        records = _sample(own, 2000, invalid_every=0, run_id="outage")
        replay_records(own, records)
        topics = _source_topics(own)
        deadline = time.monotonic() + 60
        while worker.metric("citystream_sink_errors_total") < 2:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        assert not worker_ready(own)
        # Several commit intervals (1 s): a wrong commit would have happened by now.
        for _ in range(8):
            assert sum(consumer_lag(own, own.consumer_group, topics).values()) == len(records)
            time.sleep(0.5)

        server.start()
        wait_for_zero_lag(own, own.consumer_group, topics, timeout_s=120)
        assert worker_ready(own)
        warehouse = ServerWarehouse(server.url, own.clickhouse_database)
        try:
            stored = warehouse.query(
                "SELECT (SELECT count() FROM city_events) + (SELECT count() FROM citizen_appeals)"
            ).scalar()
        finally:
            warehouse.close()
        assert stored == len(records)
    finally:
        server.stop()
