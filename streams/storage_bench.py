"""``citystream bench-storage``: the cost of the dashboards' aggregates on the embedded
engine, materialized views (0003) against the worker's refresh (0007), side by side.

One chDB process, two databases fed the same batches of decisions (and a few verdicts)
in turn: ``views`` migrated up to 0006 (0003's materialized views run inside each
insert), ``refresh`` migrated to the end (no views; a ``DashboardRefresher`` told of each
insert, refreshed every ``refresh_every`` batches, as the worker's timer does every
``dashboard_refresh_interval_s``). Per batch: the insert time into each, the refresh time
amortised over its batches, and the longest stall of a Python thread ticking every
0.2 ms meanwhile (how long chDB kept the GIL). At the end both databases must give the
same panels. The machine may be shared and noisy: compare the ratios of one run.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from processors.dashboard_refresh import DashboardRefresher
from processors.ingest import IngestContext, SourceMessage, StoredRow, ingest
from schemas import dashboard
from schemas.domain import Domain
from schemas.migrations import MIGRATIONS_DIR, migrate
from streams.clickhouse import ChdbWarehouse, Warehouse
from streams.settings import Settings
from streams.topics import kinds_by_topic

SEED = 20261126
START = datetime(2026, 11, 20, 6, tzinfo=UTC)
DISTRICTS = ("市南区", "市北区", "崂山区", "李沧区", "城阳区", "黄岛区")
CHANNELS = ("hotline_12345", "app", "wechat", "web")
EVENTS = (("A01", "暴露垃圾"), ("A02", "积存垃圾渣土"), ("B01", "非法小广告"), ("C01", "施工扰民"),
          ("D01", "占道经营"))
UNITS = ("环境卫生服务中心", "城市管理局", "市政工程处", "街道办事处")
PLACES = ("五四广场", "石老人", "金沙滩", "台东步行街", "")


class _Ticker:
    """A Python thread that wakes every 0.2 ms: the gaps between its ticks are how long
    some other thread kept the GIL (or the machine kept it off the CPU)."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-ticker", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks.append(time.perf_counter())
            time.sleep(0.0002)

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def longest_gap_ms(self, start: float, end: float) -> float:
        inside = [t for t in self.ticks[-5000:] if start <= t <= end]
        points = [start, *inside, end]
        return max(b - a for a, b in zip(points, points[1:], strict=False)) * 1000


@contextmanager
def _timed(ticker: _Ticker, into: list[tuple[float, float]]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    end = time.perf_counter()
    into.append(((end - start) * 1000, ticker.longest_gap_ms(start, end)))


def _decision(rng: random.Random, n: int, at: datetime) -> dict[str, Any]:
    code, event = rng.choice(EVENTS)
    auto = rng.random() < 0.9
    received = at - timedelta(seconds=rng.randint(0, 3600))
    return {
        "kind": "dispatch_decision", "schema_version": 1, "input_id": f"b{n}",
        "input_kind": "citizen_appeal", "channel": rng.choice(CHANNELS),
        "text": f"b{n} 的诉求原文", "code": code, "event_name": event, "urgency": "normal",
        "route": "S", "unit": rng.choice(UNITS), "district": rng.choice(DISTRICTS),
        "street": None, "road": "香港中路" if rng.random() < 0.3 else None,
        "place": rng.choice(PLACES) or None, "confidence": 0.9 if auto else 0.4,
        "auto": auto, "review_reasons": [] if auto else ["low_confidence"],
        "backend": "onnxruntime", "received_at": received.isoformat(),
        "respond_by": (received + timedelta(hours=rng.choice((0.5, 2, 24)))).isoformat(),
        "decided_at": (at + timedelta(milliseconds=n % 1000)).isoformat(),
    }


def _verdict(rng: random.Random, n: int, decision: dict[str, Any], at: datetime) -> dict[str, Any]:
    confirmed = rng.random() < 0.8
    return {
        "kind": "dispatch_feedback", "schema_version": 1, "feedback_id": f"f{n}",
        "input_id": decision["input_id"], "verdict": "confirmed" if confirmed else "corrected",
        "unit": decision["unit"] if confirmed else rng.choice(UNITS), "dispatcher_id": "d1",
        "given_at": at.isoformat(), "auto": decision["auto"], "decided_unit": decision["unit"],
        "received_at": decision["received_at"], "respond_by": decision["respond_by"],
    }


def _rows(ctx: IngestContext, records: list[tuple[str, dict[str, Any]]], offset: int,
          now: datetime) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for i, (topic, rec) in enumerate(records):
        value = json.dumps({k: v for k, v in rec.items() if v is not None}).encode()
        result = ingest(SourceMessage(topic, 0, offset + i, now, None, value), ctx, now)
        if not isinstance(result, StoredRow):
            raise RuntimeError(f"bench record refused: {result}")
        out.setdefault(result.table, []).append(result.row)
    return out


def _batches(
    ctx: IngestContext, count: int, size: int, verdicts: int
) -> list[dict[str, list[dict[str, Any]]]]:
    """Batches as the sink gets them: ``size`` decisions (a tenth of the previous batch
    delivered again; three of its reports decided again with another code) and verdicts."""
    rng = random.Random(SEED)
    out: list[dict[str, list[dict[str, Any]]]] = []
    n = 0
    previous: list[tuple[str, dict[str, Any]]] = []
    for b in range(count):
        at = START + timedelta(seconds=2 * b)
        fresh = [("dispatch.orders", _decision(rng, n + i, at)) for i in range(size)]
        n += size
        records = fresh[: size - size // 10 - 3] + previous[: size // 10]
        for topic, rec in previous[-3:] or fresh[-3:]:
            code, event = rng.choice(EVENTS)
            records.append((topic, {**rec, "code": code, "event_name": event,
                                    "decided_at": (at + timedelta(seconds=1)).isoformat()}))
        for i in range(verdicts):
            decided = rng.choice(fresh)[1]
            records.append(("dispatch.feedback", _verdict(rng, n * 10 + i, decided, at)))
        out.append(_rows(ctx, records, b * size * 2, at))
        previous = fresh
    return out


def _panels(wh: Warehouse) -> dict[str, list[Any]]:
    since, until = START - timedelta(hours=2), START + timedelta(days=1)
    return {p.name: wh.query(p.sql(since, until)).rows for p in dashboard.PANELS}


def _summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    ms = sorted(s[0] for s in samples)
    gaps = sorted(s[1] for s in samples)
    return {
        "n": len(ms),
        "mean_ms": round(statistics.fmean(ms), 2),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
        "python_stall_p50_ms": round(statistics.median(gaps), 2),
        "python_stall_max_ms": round(gaps[-1], 2),
    }


def run_storage_bench(
    settings: Settings,
    output: Path,
    batches: int = 200,
    batch_size: int = 300,
    refresh_every: int = 4,
    verdicts: int = 15,
    warmup: int = 10,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    ctx = IngestContext(
        domain=Domain.load(settings.domain_file),
        kinds_by_topic=kinds_by_topic(Settings(topic_prefix="")),
        max_text_chars=settings.max_text_chars,
        max_message_bytes=settings.max_message_bytes,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    before = work / "migrations-before-0007"
    before.mkdir()
    for sql in MIGRATIONS_DIR.glob("*.sql"):
        if int(sql.name[:4]) < 7:
            shutil.copy(sql, before / sql.name)
    data = _batches(ctx, warmup + batches, batch_size, verdicts)
    views = ChdbWarehouse(work / "chdb", "bench_views")
    refreshed = ChdbWarehouse(work / "chdb", "bench_refresh")
    try:
        migrate(views, before)
        migrate(refreshed)
        refresher = DashboardRefresher()
        timings: dict[str, list[tuple[float, float]]] = {
            "views_insert": [], "refresh_insert": [], "refresh": [],
            "views_decisions": [], "refresh_decisions": [],
        }

        def store(
            ticker: _Ticker, wh: Warehouse, kind: str, batch: dict[str, Any], measured: bool
        ) -> None:
            whole: list[tuple[float, float]] = []
            with _timed(ticker, whole):
                for table, rows in batch.items():
                    part: list[tuple[float, float]] = []
                    with _timed(ticker, part):
                        wh.insert(table, rows)
                    if wh is refreshed:
                        refresher.observe(table, rows)
                    if measured and table == "dispatch_decisions_log":
                        timings[f"{kind}_decisions"].extend(part)
            if measured:
                timings[f"{kind}_insert"].extend(whole)

        with _Ticker() as ticker:
            for i, batch in enumerate(data):
                measured = i >= warmup
                # Alternate the order: neither database always goes first.
                order = [(views, "views"), (refreshed, "refresh")]
                for wh, kind in order if i % 2 else reversed(order):
                    store(ticker, wh, kind, batch, measured)
                if (i + 1) % refresh_every == 0:
                    spent: list[tuple[float, float]] = []
                    with _timed(ticker, spent):
                        refresher.refresh(refreshed)
                    if measured:
                        timings["refresh"].extend(spent)
        refresher.refresh(refreshed)
        same = _panels(views) == _panels(refreshed)
        reports = views.query("SELECT uniqExactMerge(reports) FROM dashboard_reports_hourly")
        engine_version = views.server_version()
    finally:
        views.close()
        refreshed.close()
        shutil.rmtree(work, ignore_errors=True)

    summary = {k: _summary(v) for k, v in timings.items()}
    refresh_total = sum(s[0] for s in timings["refresh"])
    amortised = refresh_total / batches
    views_ms = summary["views_insert"]["mean_ms"]
    refresh_ms = summary["refresh_insert"]["mean_ms"]
    figures = {
        "views_insert_per_batch_ms": views_ms,
        "refresh_insert_per_batch_ms": refresh_ms,
        "refresh_amortised_per_batch_ms": round(amortised, 2),
        "refresh_total_per_batch_ms": round(refresh_ms + amortised, 2),
        "views_decisions_insert_p50_ms": summary["views_decisions"]["p50_ms"],
        "refresh_decisions_insert_p50_ms": summary["refresh_decisions"]["p50_ms"],
        "insert_ratio_views_over_refresh": round(views_ms / refresh_ms, 2),
        "total_ratio_views_over_refresh": round(views_ms / (refresh_ms + amortised), 2),
        "python_stall_p50_ms_views_insert": summary["views_insert"]["python_stall_p50_ms"],
        "python_stall_p50_ms_refresh_insert": summary["refresh_insert"]["python_stall_p50_ms"],
        "python_stall_p50_ms_refresh": summary["refresh"]["python_stall_p50_ms"],
        "panels_equal": same,
        "distinct_reports": int(reports.scalar()),
    }
    result = {
        "benchmark": "storage",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "chdb": metadata.version("chdb"),
            "chdb_engine": engine_version,
        },
        "parameters": {
            "batches": batches, "warmup_batches": warmup, "decisions_per_batch": batch_size,
            "verdicts_per_batch": verdicts, "refresh_every_batches": refresh_every,
            "seed": SEED,
        },
        "figures": figures,
        "timings": summary,
        "notes": [
            "One process, two chDB databases fed the same batches in turn (order alternating)."
            " views: 0003's four materialized views run inside each insert. refresh: no views"
            " (0007); the refresher runs the same SELECTs over the staged rows every"
            " refresh_every batches (the worker: every dashboard_refresh_interval_s, 2 s;"
            " one sink flush per 0.5 s).",
            "insert: decisions and verdicts of one batch, as the sink writes them.",
            "python_stall: the longest gap of a Python thread ticking every 0.2 ms during the"
            " operation (chDB holding the GIL, or the CPU busy elsewhere).",
            "Shared, noisy machine: compare ratios from one run.",
        ],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    log(
        f"insert of {batch_size} decisions + {verdicts} verdicts, mean of {batches} batches:\n"
        f"  with views    {views_ms:.1f} ms\n"
        f"  refresh path  {refresh_ms:.1f} ms + refresh {amortised:.1f} ms amortised "
        f"({summary['refresh']['mean_ms']:.1f} ms every {refresh_every} batches)\n"
        f"  ratio         {figures['insert_ratio_views_over_refresh']:.2f}x insert, "
        f"{figures['total_ratio_views_over_refresh']:.2f}x with the refresh\n"
        f"  python stall  p50 {figures['python_stall_p50_ms_views_insert']:.1f} ms (views "
        f"insert), {figures['python_stall_p50_ms_refresh_insert']:.1f} ms (plain insert), "
        f"{figures['python_stall_p50_ms_refresh']:.1f} ms (refresh)\n"
        f"  panels equal  {same}\n"
        f"wrote {output}"
    )
    return result
