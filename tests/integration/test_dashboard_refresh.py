"""Migration 0007 on chDB: the dashboards' aggregates kept by the worker's refresh, not by
materialized views, give exactly the numbers the views give.

Two databases in one chDB process, fed the same decisions and verdicts in the same
batches: one with 0003's views (migrations up to 0006), one with 0007 (views dropped),
fed through a real ClickHouseSink whose insert listener is the refresher, refreshed
between some batches (as the worker's timer does), with repeated deliveries, a report
decided twice with different facts (and its first decision merged away in the log before
the refresh), a restart that loses the refresher's pending rows (read from the log) and
an upgrade from a database the views used to keep. Every
panel, the board's queries and the finalised aggregate tables must be equal."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_dashboard_queries import (
    DAY,
    EXPECTED,
    MESSAGES,
    NOW,
    SINCE,
    UNTIL,
    _norm,
)

from processors.dashboard_refresh import DashboardRefresher
from processors.ingest import IngestContext, SourceMessage, StoredRow, ingest
from processors.metrics import IngestMetrics
from processors.sink import ClickHouseSink
from schemas import dashboard
from schemas.migrations import MIGRATIONS_DIR, migrate
from streams.clickhouse import ChdbWarehouse, Warehouse

pytestmark = pytest.mark.integration

def _batches() -> list[list[tuple[str, dict[str, Any]]]]:
    """MESSAGES as the sink would get them, plus repeated deliveries."""
    m = MESSAGES
    return [
        m[:4],  # R1 twice, R2, R3: stored while 0003's views still ran
        m[4:8],  # R4, R5, R6 and R7 sent to review (no model answered)
        m[8:13] + m[3:5],  # R7 decided automatically, R8, R9, F1 twice; R3, R4 again
        m[13:16],  # F2, F3, F4
        m[16:] + m[8:9],  # F8, F8_OLD, F9_OLD; R7 again
    ]


def _rows_by_table(
    batch: list[tuple[str, dict[str, Any]]], ctx: IngestContext, first_offset: int
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for i, (topic, rec) in enumerate(batch):
        msg = SourceMessage(
            topic=topic,
            partition=0,
            offset=first_offset + i,
            timestamp=NOW,
            key=None,
            value=json.dumps({k: v for k, v in rec.items() if v is not None}).encode(),
        )
        result = ingest(msg, ctx, NOW)
        assert isinstance(result, StoredRow), result
        out.setdefault(result.table, []).append(result.row)
    return out


def _snapshot(wh: Warehouse) -> dict[str, Any]:
    """Everything the dashboards and the board read, over several windows."""
    out: dict[str, Any] = {}
    windows = {
        "panel": (SINCE, UNTIL),
        "day": (DAY, DAY + timedelta(days=1)),
        "07-09": (DAY + timedelta(hours=7), DAY + timedelta(hours=9)),
        "10-12": (DAY + timedelta(hours=10), DAY + timedelta(hours=12)),
    }
    for label, (since, until) in windows.items():
        for p in dashboard.PANELS:
            result = wh.query(p.sql(since, until))
            out[f"{label}:{p.name}"] = [tuple(_norm(v) for v in r) for r in result.rows]
    board = {
        "queue": dashboard.review_queue_sql(NOW, 50),
        "counts": dashboard.board_counts_sql(NOW),
        "recent": dashboard.recent_decisions_sql(DAY, 50),
        "handled": dashboard.recently_handled_sql(DAY, 50),
        # The aggregate tables themselves, finalised (the analysts' views).
        "reports_hourly": "SELECT * FROM reports_hourly ORDER BY ALL",
        "places_hourly": "SELECT * FROM places_hourly ORDER BY ALL",
        "feedback_hourly": "SELECT * FROM feedback_hourly ORDER BY ALL",
        "review_items": "SELECT * FROM review_items FINAL ORDER BY input_id",
    }
    for name, sql in board.items():
        out[name] = [tuple(_norm(v) for v in r) for r in wh.query(sql).rows]
    return out


@pytest.fixture
def engines(tmp_path: Path, unique: str) -> Iterator[tuple[ChdbWarehouse, ChdbWarehouse]]:
    path = tmp_path / "chdb"
    views = ChdbWarehouse(path, f"views_{unique}")
    refreshed = ChdbWarehouse(path, f"refresh_{unique}")
    yield views, refreshed
    views.close()
    refreshed.close()


def _migrations_before_0007(tmp_path: Path) -> Path:
    before = tmp_path / "before-0007"
    before.mkdir()
    for sql in MIGRATIONS_DIR.glob("*.sql"):
        if int(sql.name[:4]) < 7:
            shutil.copy(sql, before / sql.name)
    return before


def test_refresh_gives_exactly_the_views_numbers(
    engines: tuple[ChdbWarehouse, ChdbWarehouse], ctx: IngestContext, tmp_path: Path
) -> None:
    views, refreshed = engines
    before = _migrations_before_0007(tmp_path)
    migrate(views, before)
    migrate(refreshed, before)
    assert {r[0] for r in views.query("SHOW TABLES LIKE '%_mv'").rows} == {
        "dashboard_reports_hourly_mv", "dashboard_places_hourly_mv",
        "dashboard_feedback_hourly_mv", "review_items_mv",
    }
    batches = _batches()
    offset = 0

    def store(wh: Warehouse, batch: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        rows = _rows_by_table(batch, ctx, offset)
        for table, table_rows in rows.items():
            wh.insert(table, table_rows)
        return rows

    # An older database: the views kept its tables until now.
    for wh in (views, refreshed):
        store(wh, batches[0])
    offset += len(batches[0])
    assert [m.version for m in migrate(refreshed)][0] == 7  # and whatever came after
    assert refreshed.query("SHOW TABLES LIKE '%_mv'").rows == []

    sink = ClickHouseSink(refreshed, IngestMetrics(), max_backoff_s=0.1)
    refresher = DashboardRefresher()
    sink.add_insert_listener(refresher.observe)

    async def feed(batch: list[tuple[str, dict[str, Any]]]) -> None:
        rows_by_table = store(views, batch)
        await sink.write(rows_by_table)

    async def run() -> None:
        nonlocal offset, refresher
        # The first refresh finds the watermark 0007 recorded: nothing to catch up.
        first = await sink.run(refresher.refresh)
        assert (first.rows, first.parts_read) == ({}, 0)
        assert _snapshot(refreshed) == _snapshot(views)

        await feed(batches[1])
        offset += len(batches[1])
        await feed(batches[2])  # two sink flushes, one refresh
        offset += len(batches[2])
        # A merge before the refresh: r7's review decision is gone from the log (its
        # automatic one replaced it), and R3, R4 are one row each again.
        refreshed.command("OPTIMIZE TABLE dispatch_decisions_log FINAL")
        result = await sink.run(refresher.refresh)
        assert result.rows == {"dispatch_decisions_log": 9, "dispatch_feedback_log": 2}
        assert result.recovered == 1  # r7's review decision, from the sink's copy
        assert _snapshot(refreshed) == _snapshot(views)

        # A restart: rows stored but not yet refreshed are lost with the process, and the
        # next refresher catches up from the log's parts above the watermark.
        await feed(batches[3])
        offset += len(batches[3])
        assert refresher.pending_rows() == 3
        refresher = DashboardRefresher()
        sink._listeners[:] = [refresher.observe]
        await feed(batches[4])
        offset += len(batches[4])
        after_restart = await sink.run(refresher.refresh)
        assert after_restart.parts_read >= 1  # batches 3 and 4 (maybe merged)
        assert after_restart.recovered == 0
        assert after_restart.rows == {"dispatch_decisions_log": 1, "dispatch_feedback_log": 3}

        # Nothing new: a refresh changes nothing; nor does one after the log's versions
        # are merged away (r7's review decision), nor a restart after that.
        settled = _snapshot(refreshed)
        assert settled == _snapshot(views)
        assert (await sink.run(refresher.refresh)).rows == {}
        for log in ("dispatch_decisions_log", "dispatch_feedback_log"):
            refreshed.command(f"OPTIMIZE TABLE {log} FINAL")
        again = await sink.run(DashboardRefresher().refresh)
        assert again.parts_read == 0
        assert _snapshot(refreshed) == settled

    asyncio.run(run())
    snapshot = _snapshot(views)
    for name, rows in EXPECTED.items():
        assert snapshot[f"panel:{name}"] == rows, name
    # r7 counts under both its codes, as the views counted it (the log keeps one).
    assert ("", "", 1) in snapshot["panel:volume_by_type"]
    sink._executor.shutdown(wait=True)  # the fixture closes the warehouse


def test_each_refresh_writes_only_what_is_new(
    engines: tuple[ChdbWarehouse, ChdbWarehouse], ctx: IngestContext
) -> None:
    """The watermark stored by each refresh, and a refresh without news inserting nothing."""
    _views, wh = engines
    migrate(wh)
    refresher = DashboardRefresher()
    rows = _rows_by_table(MESSAGES, ctx, 0)
    for table, table_rows in rows.items():
        wh.insert(table, table_rows)
        refresher.observe(table, table_rows)
    refresher.refresh(wh)
    marks = dict(
        wh.query("SELECT source, max(block) FROM dashboard_refresh_state GROUP BY source").rows
    )
    highest = dict(
        wh.query(
            "SELECT table, max(max_block_number) FROM system.parts WHERE database = "
            "currentDatabase() AND active AND table LIKE 'dispatch_%_log' GROUP BY table"
        ).rows
    )
    assert marks == highest
    parts = wh.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() "
        "AND table LIKE 'dashboard_%_hourly'"
    ).scalar()
    assert refresher.refresh(wh).rows == {}
    assert wh.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() "
        "AND table LIKE 'dashboard_%_hourly'"
    ).scalar() == parts
    assert wh.query("SELECT count() FROM dashboard_pending_decisions").scalar() == 0
    assert isinstance(NOW, datetime)
