"""The ClickHouse sink: make one micro-batch durable, retrying until it is.

The caller acknowledges the batch's Kafka offsets only after ``write`` returns, so
offsets never run ahead of what is stored. A retried insert after a crash is
absorbed by the ReplacingMergeTree tables (keyed on record id), so replay is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from processors.metrics import IngestMetrics
from streams.clickhouse import Engine, Warehouse, WarehouseError

log = logging.getLogger(__name__)

# What a failing insert can raise that is worth retrying (the server restarting,
# the network dropping, a disk filling): everything else is a bug and propagates.
RETRYABLE = (WarehouseError, OSError, EOFError)

# Told of each insert that succeeded (table, rows), on the sink's thread.
InsertListener = Callable[[str, list[dict[str, Any]]], None]
T = TypeVar("T")


class ClickHouseSink:
    def __init__(
        self,
        warehouse: Warehouse,
        metrics: IngestMetrics,
        max_backoff_s: float,
        first_backoff_s: float = 0.2,
    ) -> None:
        self._warehouse = warehouse
        self._metrics = metrics
        self._max_backoff_s = max_backoff_s
        self._first_backoff_s = first_backoff_s
        # One thread: chDB and clickhouse-driver clients are not safe to share across threads,
        # and one writer keeps the inserts of a partition in order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-sink")
        self._listeners: list[InsertListener] = []
        self.healthy = True

    @property
    def engine(self) -> Engine:
        return self._warehouse.engine

    def add_insert_listener(self, listener: InsertListener) -> None:
        """``listener(table, rows)`` after each insert that succeeded, on the sink's thread
        and before anything else runs there (the dashboards' refresh relies on it)."""
        self._listeners.append(listener)

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self._warehouse.insert(table, rows)
        for listener in self._listeners:
            listener(table, rows)

    async def write(self, rows_by_table: dict[str, list[dict[str, Any]]]) -> None:
        started = time.perf_counter()
        for table, rows in rows_by_table.items():
            await self._insert_until_done(table, rows)
            self._metrics.sink_batch_rows.labels(table).observe(len(rows))
        self._metrics.sink_flush_seconds.observe(time.perf_counter() - started)

    async def _insert_until_done(self, table: str, rows: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._first_backoff_s
        while True:
            try:
                await loop.run_in_executor(self._executor, self._insert, table, rows)
            except RETRYABLE as exc:
                self.healthy = False
                self._metrics.sink_healthy.set(0)
                self._metrics.sink_errors.labels(table).inc()
                log.error(
                    "insert of %d rows into %s failed, retrying in %.1fs: %s",
                    len(rows),
                    table,
                    backoff,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            if not self.healthy:
                log.warning("inserts into %s succeed again", table)
            self.healthy = True
            self._metrics.sink_healthy.set(1)
            return

    async def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> Any:
        """Run a read on the sink's thread (chDB is held by this process)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._warehouse.query, sql, settings
        )

    def query_blocking(self, sql: str, settings: Mapping[str, Any] | None = None) -> Any:
        """The same read from another thread (a report being written): still on the
        sink's thread, one statement at a time."""
        return self._executor.submit(self._warehouse.query, sql, settings).result()

    async def run(self, work: Callable[[Warehouse], T]) -> T:
        """``work(warehouse)`` on the sink's thread, between inserts (maintenance such as
        the dashboards' refresh)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, work, self._warehouse
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._warehouse.close()
