"""``citystream bench-dispatch``: report entering Kafka -> decision published, at a
steady rate, through Triton and through the in-process models, side by side.

Self-contained like ``citystream bench``: its own broker, its own Triton on the trained
model repository, its own workers (one per backend, one after the other, each with its
own topics, group and chDB path). The latency of a report is the Kafka timestamp of its
decision (stamped by the worker's producer when it publishes) minus the Kafka timestamp
of the report (stamped by the replaying producer): both clocks are this machine's.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from infra.services import KAFKA_VERSION, KafkaBroker, free_ports
from infra.triton import TritonServer
from infra.worker_process import WorkerProcess
from schemas.domain import Domain
from streams.kafka_admin import client_config, create_topics, producer, wait_until_stored
from streams.replay import replay
from streams.sample import json_lines, sample_records
from streams.settings import Settings
from streams.topics import DISPATCH_OUTPUTS, DISPATCH_SOURCES

SEED = 20261126
WARMUP_EVENTS = 300


def _consume_all(settings: Settings, topics: list[str], expected: int, timeout_s: float) -> list:
    consumer = KafkaConsumer(
        *topics,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        **client_config(settings),
    )
    messages: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
    finally:
        consumer.close()
    return messages


def _id_of(record: dict[str, Any]) -> str:
    return str(record.get("event_id") or record.get("appeal_id") or record.get("input_id"))


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "p99": round(float(np.percentile(arr, 99)), 1),
        "max": round(float(arr.max()), 1),
    }


def measure(
    settings: Settings, run_dir: Path, name: str, events: int, rate: float
) -> dict[str, Any]:
    """One worker, one backend: warm up, then a paced replay; latencies per decision."""
    domain = Domain.load(settings.domain_file)
    worker = WorkerProcess(settings, run_dir / f"worker-{name}.log")
    create_topics(settings)
    worker.start()
    try:
        run_id = f"{name}{uuid.uuid4().hex[:6]}"
        warm = list(json_lines(sample_records(domain, WARMUP_EVENTS, SEED + 1, f"w{run_id}")))
        lines = list(json_lines(sample_records(domain, events, SEED, run_id)))
        prod = producer(settings)
        try:
            replay(settings, prod, enumerate(warm, start=1), rate=rate)
            wait_until_stored(settings, 120)
            started = time.monotonic()
            report = replay(settings, prod, enumerate(lines, start=1), rate=rate)
            sent_s = time.monotonic() - started
        finally:
            prod.close()
        if not report.ok:
            raise RuntimeError(f"replay failed: {report}")
        total = WARMUP_EVENTS + events
        inputs = _consume_all(
            settings, [settings.topic(s.name) for s in DISPATCH_SOURCES], total, 120
        )
        decisions = _consume_all(
            settings, [settings.topic(s.name) for s in DISPATCH_OUTPUTS], total, 120 + events / 50
        )
        drained_s = time.monotonic() - started
        entered = {_id_of(json.loads(m.value)): m.timestamp for m in inputs}
        latencies, backends, auto = [], set(), 0
        steps: dict[str, list[float]] = {"queue": [], "inference": [], "address": [], "total": []}
        for message in decisions:
            decision = json.loads(message.value)
            if not decision["input_id"].startswith(run_id):
                continue  # warm-up
            latencies.append(message.timestamp - entered[decision["input_id"]])
            for step in steps:
                steps[step].append(decision["latency_ms"].get(step, 0.0))
            backends.add(decision["backend"])
            auto += bool(decision["auto"])
        if len(latencies) != events:
            raise RuntimeError(f"{name}: {len(latencies)} decisions for {events} reports")
        return {
            "backend": sorted(backends),
            "reports": events,
            "paced_rate_per_s": round(events / sent_s, 1),
            "decisions_per_s_over_run": round(events / drained_s, 1),
            "latency_ms": _quantiles(latencies),
            # Kafka timestamp of the report -> the dispatch agent taking it (its batch).
            "queue_ms": _quantiles(steps["queue"]),
            # queue + the worker's own time for the report's batch, until handed to send.
            "total_in_worker_ms": _quantiles(steps["total"]),
            "inference_ms_per_batch": _quantiles(steps["inference"]),
            "address_ms_per_report": _quantiles(steps["address"]),
            "auto_rate": round(auto / events, 4),
        }
    finally:
        worker.stop()


def run_dispatch_bench(
    settings: Settings, events: int, rates: list[float], output: Path
) -> int:
    unique = uuid.uuid4().hex[:8]
    run_dir = settings.var_dir / "bench" / f"dispatch-{unique}"
    run_dir.mkdir(parents=True, exist_ok=True)
    kafka_port, controller_port = free_ports(2)
    http_port, grpc_port, metrics_port = free_ports(3)
    broker = KafkaBroker(run_dir / "kafka", settings.cache_dir, kafka_port, controller_port)
    triton = TritonServer(
        run_dir / "triton", settings.model_repository, http_port, grpc_port, metrics_port,
        settings.cache_dir,
    )

    def bench_settings(backend: str, rate: float) -> Settings:
        tag = f"{backend}{int(rate)}"
        return settings.model_copy(
            update={
                "kafka_bootstrap_servers": broker.bootstrap,
                "kafka_security_protocol": "PLAINTEXT",
                "topic_prefix": f"bd{unique}{tag}.",
                "consumer_group": f"bd-{unique}-{tag}",
                "clickhouse_url": None,
                "chdb_path": run_dir / f"chdb-{tag}",
                "var_dir": run_dir / f"var-{tag}",
                "web_port": free_ports(1)[0],
                "triton_url": triton.grpc_url if backend == "triton" else None,
            }
        )

    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    print(f"bench-dispatch: {events} reports at {rates}/s, scratch {run_dir}", file=sys.stderr)
    try:
        broker.start(timeout_s=120)
        triton.start(timeout_s=300)
        for rate in rates:
            at_rate = results.setdefault(f"{rate:g}_per_s", {})
            # Alternating backends at each rate: both see the same machine, minutes apart.
            for backend in ("triton", "onnxruntime"):
                at_rate[backend] = measure(
                    bench_settings(backend, rate), run_dir, backend, events, rate
                )
                print(f"bench-dispatch: {rate:g}/s {backend}: {at_rate[backend]['latency_ms']}",
                      file=sys.stderr)
    except (RuntimeError, TimeoutError, KafkaError, OSError) as exc:
        print(f"citystream bench-dispatch: failed: {exc}; scratch kept: {run_dir}",
              file=sys.stderr)
        return 1
    finally:
        triton.stop()
        broker.stop()
    ratios = {
        key: round(v["triton"]["latency_ms"]["p99"] / v["onnxruntime"]["latency_ms"]["p99"], 3)
        for key, v in results.items()
    }
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "kafka_broker": KAFKA_VERSION,
        },
        "parameters": {
            "reports": events,
            "rates_per_s": rates,
            "warmup_reports": WARMUP_EVENTS,
            "dispatch_batch_size": settings.dispatch_batch_size,
            "dispatch_window_s": settings.dispatch_window_s,
            "dispatch_concurrency": settings.dispatch_concurrency,
            "topic_partitions": settings.topic_partitions,
        },
        "figures": results,
        "p99_ratio_triton_vs_in_process": ratios,
        "notes": [
            "latency: Kafka timestamp of the decision minus that of the report (both set by "
            "producers on this machine): the whole path through the worker, including address "
            "analysis, both models, the micro-batch window and publishing.",
            "The worker also stores every report and decision in chDB meanwhile (same process).",
            "Shared, noisy machine: compare the two backends within one run.",
        ],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=1))
    print(f"bench-dispatch: results in {output}")
    return 0
