"""Dispatch end to end: simulated reports through the real broker, the worker's dispatch
agent (in-process models or a real Triton), decisions to dispatch.orders/review and into
ClickHouse; the fallback when Triton stops; the feedback loop; the batch scorer."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from pipeline import replay_records

from infra.services import free_ports
from infra.triton import TritonServer
from infra.worker_process import settings_env
from models.scoring import build_dispatcher
from processors.dispatch import read_request
from processors.ingest import IngestContext, SourceMessage
from schemas.domain import Domain
from streams.kafka_admin import client_config, producer, wait_until_stored
from streams.sample import sample_records
from streams.settings import REPO_ROOT, Settings
from streams.topics import (
    DISPATCH_FEEDBACK,
    DISPATCH_ORDERS,
    DISPATCH_REVIEW,
    kinds_by_topic,
    spec_for_kind,
)

pytestmark = pytest.mark.integration


def _sample(settings: Settings, count: int, run_id: str, invalid_every: int = 0) -> list[Any]:
    domain = Domain.load(settings.domain_file)
    return list(sample_records(domain, count, seed=11, run_id=run_id, invalid_every=invalid_every))


def _wait_stored(settings: Settings, worker: Any, timeout_s: float = 120) -> None:
    try:
        wait_until_stored(settings, timeout_s)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker.log_tail(80)}") from exc


def _valid_ids(records: list[Any]) -> set[str]:
    return {
        r.get("event_id") or r["appeal_id"]
        for r in records
        if "-bad" not in (r.get("event_id") or r.get("appeal_id") or "-bad")
    }


def _published(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for spec in (DISPATCH_ORDERS, DISPATCH_REVIEW):
        consumer = KafkaConsumer(
            settings.topic(spec.name),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
            **client_config(settings),
        )
        out[spec.name] = [json.loads(m.value) for m in consumer]
        consumer.close()
    return out


def test_stream_is_dispatched_through_triton_same_as_offline(
    settings: Settings, worker_factory: Any, dispatch_triton: TritonServer
) -> None:
    live = settings.model_copy(update={"triton_url": dispatch_triton.grpc_url})
    records = _sample(live, 300, "tr", invalid_every=50)
    expected = _valid_ids(records)
    worker = worker_factory(live)
    worker.start()
    replay_records(live, records)
    _wait_stored(live, worker)

    rows = worker.query(
        "SELECT input_id, code, unit, auto, confidence, backend, route, total_ms "
        "FROM dispatch_decisions"
    )
    assert {r["input_id"] for r in rows} == expected
    assert len(rows) == len(expected)  # once each
    assert {r["backend"] for r in rows} == {"triton-grpc"}
    published = _published(live)
    assert all(d["auto"] for d in published["dispatch.orders"])
    assert not any(d["auto"] for d in published["dispatch.review"])
    assert {d["input_id"] for v in published.values() for d in v} == expected
    auto_rate = sum(r["auto"] for r in rows) / len(rows)
    assert auto_rate > 0.5, auto_rate  # small test models; `make eval` measures the real ones
    assert all(r["unit"] for r in rows if r["auto"])
    assert worker.metric("citystream_dispatch_decisions_total", backend="triton-grpc") == len(rows)

    # The batch scorer's path, in-process, on the same messages: the same decisions.
    offline = build_dispatcher(settings)
    ctx = IngestContext(offline.domain, kinds_by_topic(settings), settings.max_text_chars,
                        settings.max_message_bytes)
    now = datetime.now(UTC)
    requests = [
        read_request(
            SourceMessage(settings.topic(spec_for_kind(r["kind"]).name), 0, 0, now, None,
                          orjson.dumps(r)),
            ctx,
            now,
        )
        for r in records
    ]
    decided = offline.decide_batch([r for r in requests if r is not None])
    by_id = {r["input_id"]: r for r in rows}
    for decision in decided:
        row = by_id[decision.input_id]
        assert (row["code"], row["unit"] or None, bool(row["auto"])) == (
            decision.code,
            decision.unit,
            decision.auto,
        )
        assert abs(row["confidence"] - decision.confidence) < 1e-3


def test_triton_stopped_mid_stream_falls_back_and_loses_nothing(
    settings: Settings, worker_factory: Any, trained_models: Any, tmp_path: Path
) -> None:
    http_port, grpc_port, metrics_port = free_ports(3)
    triton = TritonServer(
        tmp_path / "triton", trained_models.repository, http_port, grpc_port, metrics_port,
        REPO_ROOT / ".cache",
    )
    triton.start(timeout_s=90)
    live = settings.model_copy(update={"triton_url": triton.grpc_url, "triton_timeout_s": 0.3})
    try:
        worker = worker_factory(live)
        worker.start()
        first = _sample(live, 150, "f1")
        replay_records(live, first)
        _wait_stored(live, worker)
        triton.stop()
        second = _sample(live, 150, "f2")
        replay_records(live, second)
        _wait_stored(live, worker)
    finally:
        triton.stop()
    rows = worker.query("SELECT input_id, backend FROM dispatch_decisions")
    assert {r["input_id"] for r in rows} == _valid_ids(first) | _valid_ids(second), (
        worker.log_tail(60)
    )
    backends = {r["input_id"]: r["backend"] for r in rows}
    assert {backends[i] for i in _valid_ids(first)} == {"triton-grpc"}
    assert {backends[i] for i in _valid_ids(second)} == {"onnxruntime"}
    assert worker.metric("citystream_inference_fallbacks_total") > 0
    assert "switching to onnxruntime" in worker.log_path.read_text()


def test_feedback_gives_live_accuracy_and_auto_rate(
    settings: Settings, worker_factory: Any
) -> None:
    worker = worker_factory(settings)
    worker.start()
    replay_records(settings, _sample(settings, 120, "fb"))
    _wait_stored(settings, worker)
    decisions = worker.query(
        "SELECT input_id, unit, auto FROM dispatch_decisions ORDER BY input_id"
    )
    auto = [d for d in decisions if d["auto"]]
    assert len(auto) >= 40
    confirmed, corrected = auto[:30], auto[30:40]
    now = datetime.now(UTC).isoformat()
    feedback = [
        {"kind": "dispatch_feedback", "schema_version": 1, "feedback_id": f"fb-{d['input_id']}",
         "input_id": d["input_id"], "verdict": "confirmed", "unit": d["unit"],
         "dispatcher_id": "disp-7", "given_at": now}
        for d in confirmed
    ] + [
        {"kind": "dispatch_feedback", "schema_version": 1, "feedback_id": f"fb-{d['input_id']}",
         "input_id": d["input_id"], "verdict": "corrected", "unit": "市南区城市管理局X",
         "dispatcher_id": "disp-7", "given_at": now}
        for d in corrected
    ]
    prod = producer(settings)
    for item in feedback:
        prod.send(settings.topic(DISPATCH_FEEDBACK.name), key=item["input_id"].encode(),
                  value=orjson.dumps(item))
    prod.flush()
    prod.close()
    _wait_stored(settings, worker)
    quality = worker.query(
        "SELECT sum(decisions) AS decisions, sum(auto_dispatched) AS auto, "
        "sum(auto_with_feedback) AS judged, sum(auto_correct) AS correct FROM dispatch_quality"
    )[0]
    assert quality["decisions"] == len(decisions)
    assert quality["auto"] == len(auto)
    assert (quality["judged"], quality["correct"]) == (40, 30)

    # The analysts' row limit on /query (default 10,000 rows), flagged as cut.
    from streams.query import api_token, query_worker

    big = query_worker(settings.web_host, settings.web_port,
                       "SELECT number FROM system.numbers LIMIT 25000", api_token(settings))
    assert big.truncated and len(big.rows) == settings.query_max_rows

    # The analysts' catalogue, served by the same worker: types from the engine.
    request = urllib.request.Request(
        worker.url("/catalogue"), headers={"Authorization": f"Bearer {api_token(settings)}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        views = {v["name"]: v for v in json.load(resp)["views"]}
    columns = {c["name"]: c for c in views["dispatch_quality"]["columns"]}
    assert columns["auto_accuracy"]["type"].startswith(("Float64", "Nullable(Float64)"))
    assert "dispatcher" in columns["auto_correct"]["description"]
    assert all(c["description"] for v in views.values() for c in v["columns"])


def _score(args: list[str], settings: Settings,
           command: str = "score") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", command, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


def test_score_cli_in_process_and_through_triton(
    settings: Settings, dispatch_triton: TritonServer, tmp_path: Path
) -> None:
    hand = [json.loads(line) for line in
            (REPO_ROOT / "models" / "eval" / "handwritten.jsonl").read_text().splitlines()][:20]
    lines = [json.dumps({"id": h["id"], "text": h["text"], "channel": h["channel"]},
                        ensure_ascii=False) for h in hand]
    lines.insert(5, "{this is not json")
    lines.insert(9, json.dumps({"id": "lamp", "text": "路灯不亮了，在市南区香港中路"},
                               ensure_ascii=False))
    lines.insert(12, json.dumps({"id": "empty", "text": "\u200b"}, ensure_ascii=False))
    src = tmp_path / "reports.jsonl"
    src.write_text("\n".join(lines) + "\n")

    local = _score(["--input", str(src), "--output", str(tmp_path / "local.jsonl")], settings)
    remote = _score(["--input", str(src), "--output", str(tmp_path / "triton.jsonl"),
                     "--via", "triton", "--triton-url", dispatch_triton.grpc_url], settings)
    for run in (local, remote):
        assert run.returncode == 0, run.stderr
        assert "21 processed, 2 rejected" in run.stderr, run.stderr
    strict = _score(["--input", str(src), "--output", str(tmp_path / "strict.jsonl"),
                     "--strict"], settings)
    assert strict.returncode == 1
    rejects = [json.loads(x) for x in
               (tmp_path / "local.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejects] == [
        (6, "not a JSON line"), (13, "text")]
    out_local = [json.loads(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    out_remote = [json.loads(x) for x in (tmp_path / "triton.jsonl").read_text().splitlines()]
    assert len(out_local) == len(lines) - 2 == len(out_remote)
    lamp = next(x for x in out_local if x["id"] == "lamp")
    assert lamp["code"] == "E02" and lamp["district"] == "市南区"
    assert [x["id"] for x in out_local if x["id"] != "lamp"] == [h["id"] for h in hand]
    for a, b in zip(out_local, out_remote, strict=True):
        assert {k: v for k, v in a.items() if k != "confidence"} == {
            k: v for k, v in b.items() if k != "confidence"
        }
        assert abs(a["confidence"] - b["confidence"]) < 1e-4
        assert set(a) >= {"id", "code", "unit", "district", "street", "location_type",
                          "confidence", "auto"}
        assert 0 <= a["confidence"] <= 1


def test_score_via_triton_fails_when_triton_is_down(settings: Settings, tmp_path: Path) -> None:
    # --via triton checks the served models: no quiet switch to the in-process ones.
    src = tmp_path / "reports.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "路灯不亮"}, ensure_ascii=False) + "\n")
    down = _score(["--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                   "--via", "triton", "--triton-url", "127.0.0.1:9"], settings)
    assert down.returncode != 0
    assert "127.0.0.1:9" in down.stderr, down.stderr[-2000:]


def test_merge_cli_in_process_and_through_triton(
    settings: Settings, dispatch_triton: TritonServer, tmp_path: Path
) -> None:
    # Two reports of one burst water main on 香港中路, out of time order, one elsewhere.
    reports = [
        {"id": "b", "text": "香港中路上水管破了，水一直往外喷，路面都是水",
         "time": "2025-11-05T08:08:00+08:00", "channel": "hotline_12345"},
        {"id": "a", "text": "市南区香港中路18号门前人行道上自来水管爆了，水哗哗往外冒",
         "time": "2025-11-05T08:00:00+08:00", "channel": "app"},
        {"id": "c", "text": "崂山区松岭路垃圾桶满了好几天没人清理",
         "time": "2025-11-05T08:05:00+08:00"},
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in reports] + ["{broken"]
    src = tmp_path / "reports.jsonl"
    src.write_text("\n".join(lines) + "\n")
    outs = {}
    for via, extra in (("onnx", []), ("triton", ["--triton-url", dispatch_triton.grpc_url])):
        out = tmp_path / f"{via}.jsonl"
        run = _score(["--input", str(src), "--output", str(out), "--via", via, *extra],
                     settings, command="merge")
        assert run.returncode == 0, run.stderr
        assert "3 processed, 1 rejected" in run.stderr, run.stderr
        outs[via] = [json.loads(x) for x in out.read_text().splitlines()]
    assert outs["onnx"] == outs["triton"]
    assert outs["onnx"] == [{"id": "b", "case_id": "a"}, {"id": "a", "case_id": "a"},
                            {"id": "c", "case_id": "c"}]
