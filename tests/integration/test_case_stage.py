"""Duplicate merging and hotspots on the live stream: decisions on dispatch.orders (the
simulator's bursts, with their true codes and places, so the test checks the stage and not
the classifier) through the worker's case stage into dispatch.cases and ClickHouse.

The links must be the ones the pure ``CaseLinker`` gives offline over the same decisions,
also when the worker is stopped between halves of the stream (the second worker rebuilds
the open cases from the topic) and when it is killed mid-stream (each report keeps one
link, the same one)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from models.simulator.bursts import burst_stream
from processors.case_stage import DecisionMessage, link_messages
from processors.cases import CaseLinker
from processors.merge import CaseIndex
from processors.merge_batch import batch_policy
from schemas.domain import Domain
from schemas.records import DispatchDecision, to_wire
from streams.kafka_admin import client_config, create_topics, producer, wait_until_stored
from streams.settings import Settings
from streams.topics import DISPATCH_CASES, DISPATCH_ORDERS, message_key

pytestmark = pytest.mark.integration


def _decisions(domain: Domain, now: datetime) -> list[DispatchDecision]:
    """Two days of bursts re-stamped to end now, in arrival order."""
    stream = burst_stream(domain, seed=5, n_incidents=40, background=60, days=2)
    last = max(b.record.reported_at for b in stream)
    shift = now - timedelta(minutes=5) - last
    out = []
    for b in stream:
        r = b.record
        at = (r.reported_at + shift).isoformat()
        out.append(DispatchDecision(
            kind="dispatch_decision", schema_version=1, input_id=r.record_id,
            input_kind="citizen_appeal", channel=r.channel, text=r.text, code=r.code,
            event_name=domain.event_types[r.code].name, urgency="normal", route=r.route,
            unit=r.true_unit, district=r.district, street=r.street, road=r.road,
            place=r.place, confidence=0.99, auto=True, backend="onnxruntime",
            received_at=at, decided_at=at,  # type: ignore[arg-type]
        ))
    return out + _fold(now - timedelta(minutes=4))[:2]


def _fold(at: datetime) -> list[DispatchDecision]:
    """Two reports of one burst water main that open two cases (one names the 小区, one
    the road), then a third that names both and folds the cases into one."""
    def report(input_id: str, minutes: int, text: str, **place: str | None) -> DispatchDecision:
        when = (at + timedelta(minutes=minutes)).isoformat()
        return DispatchDecision(
            kind="dispatch_decision", schema_version=1, input_id=input_id,
            input_kind="citizen_appeal", channel="hotline_12345", text=text, code="E06",
            event_name="供水问题", urgency="urgent", route="U:water", unit="青岛市供水集团",
            district="市南区", confidence=0.97, auto=True, backend="onnxruntime",
            received_at=when, decided_at=when, **place,  # type: ignore[arg-type]
        )

    return [
        report("fold-1", 0, "海韵花园小区停水了", place="海韵花园", street="八大关街道",
               road=None),
        report("fold-2", 1, "香港中路18号小区停水", road="香港中路"),
        report("fold-3", 2, "香港中路18号海韵花园3号楼停水", place="海韵花园",
               street="八大关街道", road="香港中路"),
    ]


def _publish(settings: Settings, decisions: list[DispatchDecision], start_ms: int) -> None:
    prod = producer(settings)
    try:
        for n, d in enumerate(decisions):
            wire = to_wire(d)
            prod.send(settings.topic(DISPATCH_ORDERS.name), key=message_key(DISPATCH_ORDERS, wire),
                      value=orjson.dumps(wire), timestamp_ms=start_ms + n)
        prod.flush()
    finally:
        prod.close()


def _offline_links(settings: Settings, decisions: list[DispatchDecision], start_ms: int,
                   index: CaseIndex) -> dict[str, str]:
    """input id -> case id, as the pure linker gives them over the whole stream."""
    linker = CaseLinker(index)
    messages = [
        DecisionMessage(DISPATCH_ORDERS.name, 0, n, start_ms + n, orjson.dumps(to_wire(d)))
        for n, d in enumerate(decisions)
    ]
    cases: dict[str, str] = {}
    for link in link_messages(linker, messages, datetime.now(UTC)):
        cases[link.input_id] = link.case_id
    return cases


def _wait(settings: Settings, worker: Any, timeout_s: float = 120) -> None:
    try:
        wait_until_stored(settings, timeout_s)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker.log_tail(80)}") from exc


def test_live_cases_match_the_pure_linker_across_a_restart_and_a_kill(
    settings: Settings, worker_factory: Any
) -> None:
    # Small batches, so the kill lands mid-stream.
    live = settings.model_copy(update={"dispatch_enabled": False, "sink_batch_size": 20})
    domain = Domain.load(live.domain_file)
    index = CaseIndex(batch_policy(domain))
    now = datetime.now(UTC)
    decisions = _decisions(domain, now)
    # The report that folds two cases comes last, in a batch of its own: the folded case's
    # report was stored (and embedded) batches before.
    folding = _fold(now - timedelta(minutes=4))[2]
    start_ms = int(time.time() * 1000) - 3_600_000
    expected = _offline_links(live, [*decisions, folding], start_ms, index)
    assert len(set(expected.values())) < len(expected) - 20, "the stream must hold bursts"
    create_topics(live)
    third_of = len(decisions) // 3
    parts = [(0, third_of), (third_of, 2 * third_of), (2 * third_of, len(decisions))]

    first = worker_factory(live)
    first.start()
    _publish(live, decisions[: parts[0][1]], start_ms)
    _wait(live, first)
    first.stop()  # the next worker must rebuild the open cases from the topic

    second = worker_factory(live)
    second.start()
    _publish(live, decisions[parts[1][0] : parts[1][1]], start_ms + parts[1][0])
    # Killed as soon as it has linked some of its part: what it had not committed comes
    # again to the next worker (when the kill lands before the end).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if second.query("SELECT count() AS n FROM case_links")[0]["n"] > parts[0][1]:
            break
        time.sleep(0.02)
    second.kill()
    _publish(live, decisions[parts[2][0] :], start_ms + parts[2][0])
    third = worker_factory(live)
    third.start()
    _wait(live, third)
    _publish(live, [folding], start_ms + len(decisions))
    _wait(live, third)
    decisions = [*decisions, folding]

    rows = third.query("SELECT input_id, case_id, reporters, relinked FROM case_links")
    got = {r["input_id"]: r["case_id"] for r in rows}
    assert len(rows) == len(decisions) == len(got)  # one link per report
    assert got == expected, "\n".join(
        line for w in (first, second, third) for line in w.log_tail(400).splitlines()
        if "case stage" in line or "Traceback" in line
    )
    assert 0 < third.metric("citystream_case_rebuild_decisions_total") < len(decisions)
    assert third.metric("citystream_case_links_total", outcome="opened") > 0  # it had work

    # Every report embedded once for similar-case search, with the model output audited.
    embedded = third.query(
        "SELECT count() AS n, uniqExact(input_id) AS reports, any(length(embedding)) AS dims "
        "FROM case_embeddings"
    )
    assert embedded == [{"n": len(decisions), "reports": len(decisions), "dims": 64}]
    # Each under the case its report ended in (folded cases' reports moved with them).
    stored_cases = third.query("SELECT input_id, case_id FROM case_embeddings")
    assert {r["input_id"]: r["case_id"] for r in stored_cases} == expected
    assert any(r["relinked"] for r in rows), "the stream folds no case: nothing was moved"
    audited = third.query(
        "SELECT count() AS n FROM model_audit WHERE model = 'case_embedder' AND processor = 'cases'"
    )
    assert audited == [{"n": len(decisions)}]

    # The cases view adds up: each case's reporters are its reports.
    cases = third.query("SELECT case_id, reports FROM cases")
    sizes: dict[str, int] = {}
    for case_id in expected.values():
        sizes[case_id] = sizes.get(case_id, 0) + 1
    assert {c["case_id"]: c["reports"] for c in cases} == sizes

    # The links on the topic: every report's latest link there names the same case.
    consumer = KafkaConsumer(live.topic(DISPATCH_CASES.name), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000,
                             **client_config(live))
    latest: dict[str, str] = {}
    for message in consumer:
        link = orjson.loads(message.value)
        latest[link["input_id"]] = link["case_id"]
    consumer.close()
    assert latest == expected


def test_a_place_that_keeps_producing_cases_is_raised_as_a_hotspot(
    settings: Settings, worker_factory: Any
) -> None:
    live = settings.model_copy(update={"dispatch_enabled": False, "hotspot_interval_s": 1.0})
    domain = Domain.load(live.domain_file)
    now = datetime.now(UTC)
    place, district, road = "海韵花园", "市南区", "香港中路"

    def report(n: int, code: str, hours_ago: float, text: str) -> DispatchDecision:
        at = (now - timedelta(hours=hours_ago)).isoformat()
        return DispatchDecision(
            kind="dispatch_decision", schema_version=1, input_id=f"hs{n}",
            input_kind="citizen_appeal", channel="hotline_12345", text=text, code=code,
            event_name=domain.event_types[code].name, urgency="normal", route="r",
            unit="u", district=district, street=None, road=road, place=place,
            confidence=0.9, auto=True, backend="onnxruntime", received_at=at, decided_at=at,
        )

    # Three problems at one 小区 over three days (three cases), and one elsewhere.
    decisions = [
        report(1, "A01", 60, "海韵花园小区门口垃圾堆了好几天没人清运"),
        report(2, "A01", 59.5, "海韵花园门口的垃圾没人清理，臭气熏天"),
        report(3, "C01", 30, "海韵花园旁边工地半夜施工噪音太大"),
        report(4, "E06", 2, "海韵花园小区停水了，什么时候来水"),
    ]
    elsewhere = report(5, "A01", 1, "台东商业步行街垃圾桶满了没人清运")
    decisions.append(elsewhere.model_copy(update={"place": "台东商业步行街",
                                                  "district": "市北区", "road": None}))
    create_topics(live)
    worker = worker_factory(live)
    worker.start()
    _publish(live, decisions, int(time.time() * 1000))
    _wait(live, worker)
    deadline = time.monotonic() + 30
    spots: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not spots:
        _wait(live, worker)
        spots = worker.query("SELECT district, place, cases, case_ids FROM hotspots")
        time.sleep(0.5)
    assert spots == [{"district": district, "place": place, "cases": 3,
                      "case_ids": ["hs1", "hs3", "hs4"]}], worker.log_tail(40)
    links = worker.query("SELECT input_id, case_id FROM case_links ORDER BY input_id")
    assert [r["case_id"] for r in links] == ["hs1", "hs1", "hs3", "hs4", "hs5"]
    assert worker.metric("citystream_hotspots_raised_total") == 1
