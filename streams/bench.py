"""``citystream bench``: produce rate, sink throughput and ingest latency, side by side.

Self-contained: it starts its own Kafka broker (free ports, home under
``var_dir/bench``) and its own worker (own topics, group, chDB path, web port), so a
``make run`` stack on the same machine is neither used nor disturbed. The machine may be
shared and noisy, so the figures that matter are the ratios measured in one run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from infra.services import KAFKA_VERSION, KafkaBroker, free_ports
from infra.worker_process import WorkerProcess, metric_total
from schemas.domain import Domain
from streams.kafka_admin import create_topics, producer, wait_for_zero_lag
from streams.replay import ReplayReport, replay
from streams.sample import json_lines, sample_records
from streams.settings import Settings
from streams.topics import INGEST_SOURCES

SEED = 20240601
LATENCY_EVENTS = 5000
LATENCY_RATE = 1000.0  # msg/s: a steady load well below the sink's capacity
LATENCY_METRIC = "citystream_ingest_latency_seconds"
EVENTS_OUT_METRIC = "citystream_events_out"


def numbered_sample(settings: Settings, count: int, run_id: str) -> list[tuple[int, bytes]]:
    """``count`` valid sample records as (line number, JSON bytes), all in memory."""
    domain = Domain.load(settings.domain_file)
    return list(enumerate(json_lines(sample_records(domain, count, SEED, run_id)), start=1))


# ------------------------------------------------------------------------- metrics text

_LE = re.compile(r'le="([^"]+)"')


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts by upper bound, summed over the other labels (topics)."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(f"{name}_bucket{{"):
            continue
        match = _LE.search(line)
        if match is None:
            continue
        bound = float(match.group(1))  # float("+Inf") is inf
        buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Quantile of the observations made between two snapshots, like Prometheus does it:
    linear inside the bucket, so only as fine as the bucket bounds."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    target = q * counts[-1]
    lower, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= target:
            if bound == float("inf"):
                return lower  # beyond the last finite bound: all we can say
            if count == lower_count:
                return bound
            return lower + (bound - lower) * (target - lower_count) / (count - lower_count)
        lower, lower_count = bound, count
    return lower


class StoredCounter(threading.Thread):
    """Polls the worker's rows-stored counter; notes when it first reaches a target."""

    def __init__(self, worker: WorkerProcess, target: float, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True, name="bench-stored-counter")
        self.worker = worker
        self.target = target
        self.interval_s = interval_s
        self.reached_at: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                stored = metric_total(self.worker.metrics_text(), f"{EVENTS_OUT_METRIC}_total")
            except (urllib.error.URLError, OSError):
                stored = -1.0  # a busy worker answering late: try again next tick
            if stored >= self.target:
                self.reached_at = time.monotonic()
                return
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()


# ---------------------------------------------------------------------------------- run


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in ("chdb", "chdb-core", "kafka-python", "faust-streaming", "aiokafka"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def _produce(
    settings: Settings, lines: list[tuple[int, bytes]], rate: float | None
) -> ReplayReport:
    prod = producer(settings)
    try:
        report = replay(settings, prod, iter(lines), rate=rate)
    finally:
        prod.close()
    if not report.ok or report.unroutable:
        raise RuntimeError(
            f"replay incomplete: {report.sent} sent, {report.confirmed} confirmed, "
            f"{report.failed} failed, {len(report.unroutable)} unroutable"
        )
    return report


def _stored_count(worker: WorkerProcess, run_id: str) -> int:
    # Through the FINAL views: a re-delivered duplicate would not inflate the count.
    rows = worker.query(
        f"SELECT (SELECT count() FROM city_events WHERE event_id LIKE '{run_id}-%') + "
        f"(SELECT count() FROM citizen_appeals WHERE appeal_id LIKE '{run_id}-%')"
    )
    return int(next(iter(rows[0].values())))


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN check without math


def run_bench(settings: Settings, events: int, output: Path) -> int:
    if events < 1:
        raise SystemExit("citystream bench: --events must be at least 1")
    unique = uuid.uuid4().hex[:8]
    # Hex only: '_' would be a LIKE wildcard in the prefix filters below.
    run_id, latency_run_id = f"b{unique}", f"l{unique}"
    run_dir = settings.var_dir / "bench" / f"run-{unique}"
    run_dir.mkdir(parents=True, exist_ok=True)
    kafka_port, controller_port, web_port = free_ports(3)
    broker = KafkaBroker(
        run_dir / "kafka", settings.cache_dir, port=kafka_port, controller_port=controller_port
    )
    bench = settings.model_copy(
        update={
            # Its own broker, plain and local: whatever the caller's cluster settings say.
            "kafka_bootstrap_servers": broker.bootstrap,
            "kafka_security_protocol": "PLAINTEXT",
            "kafka_sasl_mechanism": None,
            "kafka_sasl_username": None,
            "kafka_sasl_password": None,
            "kafka_ssl_cafile": None,
            "topic_prefix": f"bench{unique}.",
            "consumer_group": f"bench-{unique}",
            "topic_replication_factor": 1,
            # The embedded engine, in a directory of its own.
            "clickhouse_url": None,
            "clickhouse_password": None,
            "chdb_path": run_dir / "chdb",
            "var_dir": run_dir / "var",
            "web_host": "127.0.0.1",
            "web_port": web_port,
            # The storage path alone; `citystream bench-dispatch` measures dispatch.
            "dispatch_enabled": False,
        }
    )
    topics = [bench.topic(s.name) for s in INGEST_SOURCES]
    worker = WorkerProcess(bench, run_dir / "worker.log")
    load_before = os.getloadavg()
    print(f"bench: {events} events, run {unique}, scratch {run_dir}", file=sys.stderr)

    lines = numbered_sample(bench, events, run_id)
    latency_lines = numbered_sample(bench, LATENCY_EVENTS, latency_run_id)
    drain_timeout = 120 + events / 500  # generous: a worker 10x slower than usual still passes

    try:
        broker.start(timeout_s=120)
        create_topics(bench)

        # (a) Produce rate alone, nothing consuming: the ceiling the sink is compared with.
        produced = _produce(bench, lines, rate=None)
        print(f"bench: produced {produced.sent} in {produced.seconds:.1f}s", file=sys.stderr)

        # (b) + (d) The worker starts on full topics; from ready to zero lag is pure draining.
        counter = StoredCounter(worker, events)
        ready_at = worker.start()
        counter.start()
        try:
            wait_for_zero_lag(bench, bench.consumer_group, topics, drain_timeout)
        finally:
            counter.stop()
        drained_at = time.monotonic()
        counter.join(timeout=5)
        stored_rows = _stored_count(worker, run_id)
        print(f"bench: drained in {drained_at - ready_at:.1f}s", file=sys.stderr)

        # (c) Steady paced load on a running, idle worker.
        hist_before = histogram_buckets(worker.metrics_text(), LATENCY_METRIC)
        paced = _produce(bench, latency_lines, rate=LATENCY_RATE)
        wait_for_zero_lag(bench, bench.consumer_group, topics, drain_timeout)
        # Observed before the offsets are acked, so zero lag means all are in the histogram.
        hist_after = histogram_buckets(worker.metrics_text(), LATENCY_METRIC)
        # The row can land up to sink_flush_interval after it was counted; wait for all of it.
        latency_rows = _stored_count(worker, latency_run_id)
        deadline = time.monotonic() + 10 * bench.sink_flush_interval_s + 5
        while latency_rows < LATENCY_EVENTS and time.monotonic() < deadline:
            time.sleep(bench.sink_flush_interval_s)
            latency_rows = _stored_count(worker, latency_run_id)
        per_event = worker.query(
            "SELECT quantilesExact(0.5, 0.99)(l) AS q FROM ("
            f"SELECT ingest_latency_ms AS l FROM city_events WHERE event_id LIKE "
            f"'{latency_run_id}-%' UNION ALL "
            f"SELECT ingest_latency_ms AS l FROM citizen_appeals WHERE appeal_id LIKE "
            f"'{latency_run_id}-%')"
        )[0]["q"]
        engine_version = str(worker.query("SELECT version() AS v")[0]["v"])
    except (RuntimeError, TimeoutError, KafkaError, OSError) as exc:
        print(f"citystream bench: failed: {exc}", file=sys.stderr)
        if worker.proc is not None:
            print(f"--- worker log ({worker.log_path}) ---\n{worker.log_tail()}", file=sys.stderr)
        print(f"citystream bench: scratch kept for a look: {run_dir}", file=sys.stderr)
        return 1
    finally:
        # Always: a bench must not leave a broker or a worker behind.
        worker.stop()
        broker.stop()

    sink_s = drained_at - ready_at
    hist_count = hist_after.get(float("inf"), 0.0) - hist_before.get(float("inf"), 0.0)
    figures: dict[str, Any] = {
        "produce_msgs_per_s": round(_rate(produced.sent, produced.seconds), 1),
        "produce_seconds": round(produced.seconds, 3),
        "sink_events_per_s": round(_rate(events, sink_s), 1),
        "sink_seconds": round(sink_s, 3),
        "sink_vs_produce_ratio": round(
            _rate(events, sink_s) / _rate(produced.sent, produced.seconds), 3
        ),
        # Same drain, clock stopped when the worker's rows-stored counter reached N
        # (0.25 s polling) instead of at zero committed lag (commit every 1 s, 0.5 s polling).
        "sink_events_per_s_by_stored_counter": (
            round(_rate(events, counter.reached_at - ready_at), 1)
            if counter.reached_at is not None
            else None
        ),
        "worker_ready_s": round(ready_at - worker.started_at, 3),
        "latency_paced_msgs_per_s": round(_rate(paced.sent, paced.seconds), 1),
        # Broker timestamp -> row stored (includes the micro-batch wait and the insert).
        "latency_histogram_p50_ms": round(
            histogram_quantile(0.5, hist_before, hist_after) * 1000, 1
        ),
        "latency_histogram_p99_ms": round(
            histogram_quantile(0.99, hist_before, hist_after) * 1000, 1
        ),
        "latency_histogram_observations": int(hist_count),
        # Broker timestamp -> its micro-batch taken, per stored row (excludes the insert).
        "latency_per_event_p50_ms": round(float(per_event[0]), 1),
        "latency_per_event_p99_ms": round(float(per_event[1]), 1),
        "latency_rows": latency_rows,
        "latency_expected_rows": LATENCY_EVENTS,
        "stored_rows": stored_rows,
        "expected_rows": events,
    }
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "kafka_broker": KAFKA_VERSION,
            "chdb_engine": engine_version,
            **_versions(),
        },
        "parameters": {
            "events": events,
            "latency_events": LATENCY_EVENTS,
            "latency_rate_msgs_per_s": LATENCY_RATE,
            "seed": SEED,
            "topic_partitions": bench.topic_partitions,
            "sink_batch_size": bench.sink_batch_size,
            "sink_flush_interval_s": bench.sink_flush_interval_s,
            "producer": "kafka-python, acks=all, max_in_flight=1, linger_ms=5",
        },
        "figures": figures,
        "notes": [
            "Shared, noisy machine: compare ratios from one run, not absolutes across runs.",
            "produce: unpaced replay of all events with nothing consuming, until every send "
            "is confirmed.",
            "sink: the worker starts after the topics are full; clock runs from /readyz ready "
            "to zero committed lag (includes up to ~1.5 s of commit interval and lag polling).",
            "latency_histogram_*: bucket resolution (bounds 0.1/0.25/0.5/1/2.5 s ...), linear "
            "inside a bucket; broker timestamp to row stored.",
            "latency_per_event_*: exact quantiles of the stored rows' ingest_latency_ms: broker "
            "timestamp to the worker taking the message's micro-batch (so it includes the wait "
            "for the batch to fill or sink_flush_interval_s to pass), excluding the insert.",
        ],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(run_dir, ignore_errors=True)  # the broker and chDB scratch is not needed now

    ok = stored_rows == events and latency_rows == LATENCY_EVENTS
    print(
        f"produce    {_fmt(figures['produce_msgs_per_s'], 0)} msg/s "
        f"({produced.sent} in {produced.seconds:.1f}s, unpaced, confirmed)\n"
        f"sink       {_fmt(figures['sink_events_per_s'], 0)} events/s "
        f"({events} in {sink_s:.1f}s from ready to zero lag) = "
        f"{figures['sink_vs_produce_ratio']:.2f} x produce\n"
        f"ready      {figures['worker_ready_s']:.1f}s from worker start\n"
        f"latency    at {LATENCY_RATE:.0f} msg/s: stored p50 "
        f"{_fmt(figures['latency_histogram_p50_ms'])} ms, p99 "
        f"{_fmt(figures['latency_histogram_p99_ms'])} ms (histogram buckets); "
        f"read p50 {_fmt(figures['latency_per_event_p50_ms'])} ms, p99 "
        f"{_fmt(figures['latency_per_event_p99_ms'])} ms (per event)\n"
        f"rows       {stored_rows}/{events} stored, {latency_rows}/{LATENCY_EVENTS} paced "
        f"-> {'ok' if ok else 'MISMATCH'}\n"
        f"wrote {output}"
    )
    return 0 if ok else 1


def write_bench_report(output: Path, report: Mapping[str, Any], markdown: str) -> None:
    """A benchmark's figures as JSON and its table as markdown beside it (``.md``), the
    table printed too."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    output.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"written: {output}")
