"""The dashboards' aggregates kept by the worker on the embedded engine (migration 0007).

On chDB a Faust timer runs ``DashboardRefresher.refresh`` on the sink's thread every
``dashboard_refresh_interval_s``: 0003's views' SELECTs over the logs' rows inserted
since the last refresh (the parts and blocks above the watermark), into the hourly tables
and review_items, then the watermark (the logs' highest insert block, now all
aggregated) is stored. The sink tells the refresher of every insert
(``ClickHouseSink.add_insert_listener``), so a row a merge collapsed into a later version
of the same report before the refresh came is still taken (from a staging copy), as the
view would have taken it. Everything on the sink's thread happens in order, so every part
in the log at a refresh holds only rows that refresh or an earlier one takes.

A restart needs nothing special: the first refresh reads what is above the stored
watermark (rows stored before a crash but not yet refreshed, or written while no worker
ran). Only a report decided twice with different facts within the seconds before a crash
could then miss its earlier decision, if a merge collapsed it before that refresh.

On a server nothing is registered: its materialized views do the work in its process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.dashboard_refresh import (
    LOGS,
    STAGING,
    STATE_TABLE,
    WATERMARKS_SQL,
    Feed,
    Watermarks,
    block_numbered,
    dashboard_feeds,
    keys_sql,
    missing_rows,
    new_rows_statements,
    parts_sql,
    refresh_statements,
    staging_statements,
    tables_sql,
)
from streams.clickhouse import Warehouse

if TYPE_CHECKING:
    import faust

    from processors.worker import WorkerState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    rows: dict[str, int]  # rows the sink inserted since the last refresh, per log
    parts_read: int  # parts of the logs holding blocks above the watermark
    recovered: int  # inserted rows a merge had collapsed, taken from the staging copy
    seconds: float


def insert_refreshed(
    warehouse: Warehouse, batches: Iterable[tuple[str, list[dict[str, Any]]]]
) -> None:
    """Insert as the sink does and, on chDB, bring the dashboards' tables up to date as the
    worker would (for tools and tests that write without a worker: a report over data
    stored this way sees what it would see live)."""
    refresher = DashboardRefresher() if warehouse.engine == "chdb" else None
    for table, rows in batches:
        warehouse.insert(table, rows)
        if refresher is not None:
            refresher.observe(table, rows)
    if refresher is not None:
        refresher.refresh(warehouse)


class DashboardRefresher:
    """Brings the dashboards' aggregates up to date with what was inserted.

    ``observe`` is the sink's insert listener; ``refresh`` runs on the thread that owns
    the warehouse (the sink's). A refresh that fails keeps its rows for the next one.
    """

    def __init__(
        self, feeds: tuple[Feed, ...] | None = None, persist_every_s: float = 30.0
    ) -> None:
        self._feeds = feeds if feeds is not None else dashboard_feeds()
        # The stored watermark may lag (a restart then reads a little more again): one
        # small insert every refresh is not needed.
        self._persist_every_s = persist_every_s
        self._persisted_at: float | None = None
        self._unpersisted: dict[str, int] = {}
        self._logs = tuple(log for log in LOGS if any(f.source == log for f in self._feeds))
        self._lock = threading.Lock()
        self._pending: dict[str, list[dict[str, Any]]] = {log: [] for log in self._logs}
        self._marks: Watermarks | None = None  # loaded by the first refresh
        self._by_block: set[str] = set()

    def observe(self, table: str, rows: list[dict[str, Any]]) -> None:
        if table in self._pending:
            with self._lock:
                self._pending[table].extend(rows)

    def pending_rows(self) -> int:
        with self._lock:
            return sum(len(rows) for rows in self._pending.values())

    def _take(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            taken = {t: rows for t, rows in self._pending.items() if rows}
            for table in taken:
                self._pending[table] = []
        return taken

    def _give_back(self, taken: dict[str, list[dict[str, Any]]]) -> None:
        with self._lock:
            for table, rows in taken.items():
                self._pending[table] = rows + self._pending[table]

    def _start(self, warehouse: Warehouse) -> Watermarks:
        for statement in staging_statements(self._logs):
            warehouse.command(statement)
        self._by_block = block_numbered(warehouse.query(tables_sql(self._logs)).rows)
        return Watermarks.from_rows(warehouse.query(WATERMARKS_SQL).rows)

    def refresh(self, warehouse: Warehouse) -> RefreshResult:
        started = time.perf_counter()
        taken = self._take()
        above: dict[str, list[str]] = {}
        collapsed: dict[str, list[Any]] = {}
        done = False
        try:
            if self._marks is None:
                self._marks = self._start(warehouse)
            elif not taken:
                # Every insert goes through the sink: nothing told, nothing new.
                done = True
                return RefreshResult({}, 0, 0, time.perf_counter() - started)
            marks = self._marks
            parts = warehouse.query(parts_sql(self._logs)).rows
            above = marks.parts_above(parts)
            for statement in new_rows_statements(
                self._feeds, above.keys(), marks.blocks, self._by_block
            ):
                warehouse.command(statement)
            # What the sink inserted that the log no longer holds, asked after those reads:
            # a merge never brings a row back, so a row still there now was there for
            # every read above; one gone (maybe during them) is taken from the copy.
            for log, rows in taken.items():
                present = (
                    warehouse.query(keys_sql(log, marks.get(log), log in self._by_block)).rows
                    if above.get(log)
                    else []
                )
                missing = missing_rows(log, rows, present)
                if missing:
                    collapsed[log] = missing
            for log, rows in collapsed.items():
                warehouse.command(f"TRUNCATE TABLE {STAGING[log]}")
                warehouse.insert(STAGING[log], rows)
            for statement in refresh_statements(self._feeds, collapsed.keys()):
                warehouse.command(statement)
            for log in collapsed:
                warehouse.command(f"TRUNCATE TABLE {STAGING[log]}")
            self._unpersisted.update(marks.advance(parts))
            now = time.monotonic()
            if self._unpersisted and (
                self._persisted_at is None or now - self._persisted_at >= self._persist_every_s
            ):
                warehouse.insert(STATE_TABLE, Watermarks.state_rows(self._unpersisted))
                self._unpersisted = {}
                self._persisted_at = now
            done = True
        finally:
            if not done:
                self._give_back(taken)
        return RefreshResult(
            {t: len(rows) for t, rows in taken.items()},
            sum(len(p) for p in above.values()),
            sum(len(rows) for rows in collapsed.values()),
            time.perf_counter() - started,
        )


def add_dashboard_refresh(app: faust.App, state: WorkerState) -> DashboardRefresher | None:
    """On the embedded engine: the refresher listening to the sink, and its timer."""
    sink = state.sink
    if sink.engine != "chdb":
        return None
    refresher = DashboardRefresher()
    sink.add_insert_listener(refresher.observe)

    @app.timer(interval=state.settings.dashboard_refresh_interval_s)
    async def refresh_dashboards() -> None:
        try:
            result = await sink.run(refresher.refresh)
        except Exception as exc:  # noqa: BLE001 - a failed refresh must not stop the worker
            log.error(
                "dashboard refresh failed, %d rows kept for the next: %r",
                refresher.pending_rows(),
                exc,
            )
            return
        if result.recovered:
            log.info("dashboards: %d rows collapsed by a merge taken from the sink's copy",
                     result.recovered)
        if result.rows or result.parts_read:
            log.debug("dashboards refreshed: %s from %d parts in %.1f ms", result.rows,
                      result.parts_read, result.seconds * 1000)

    return refresher
