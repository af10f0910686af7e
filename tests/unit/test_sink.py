"""ClickHouseSink.write: retry a failing insert with backoff until it lands, exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from processors.metrics import IngestMetrics
from processors.sink import ClickHouseSink
from streams.clickhouse import QueryResult, WarehouseError


class FlakyWarehouse:
    """Raises ``error`` on the first ``failures`` inserts, then records the rows."""

    dialect = "modern"
    database = "test"

    def __init__(
        self,
        metrics: IngestMetrics,
        failures: int = 0,
        error: BaseException | None = None,
    ) -> None:
        self._metrics = metrics
        self.failures = failures
        self.error = error or WarehouseError("server went away")
        self.calls = 0
        self.inserted: dict[str, list[dict[str, Any]]] = {}
        # The sink_healthy gauge as seen at the start of each insert attempt.
        self.healthy_seen: list[float | None] = []
        self.closed = False
        self.queries: list[str] = []

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.calls += 1
        self.healthy_seen.append(gauge(self._metrics, "citystream_sink_healthy"))
        if self.calls <= self.failures:
            raise self.error
        self.inserted.setdefault(table, []).extend(rows)

    def query(self, sql: str, settings=None) -> QueryResult:
        self.queries.append(sql)
        return QueryResult(["x"], ["UInt8"], [(1,)])

    def command(self, sql: str) -> None:  # pragma: no cover - not used by the sink
        raise AssertionError("the sink does not run commands")

    def server_version(self) -> str:  # pragma: no cover - not used by the sink
        return "26.9.2.1"

    def close(self) -> None:
        self.closed = True


def gauge(metrics: IngestMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def errors_for(metrics: IngestMetrics, table: str) -> float:
    value = metrics.registry.get_sample_value("citystream_sink_errors_total", {"table": table})
    return value or 0.0


def rows(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "n": i} for i in range(n)]


def make_sink(
    failures: int = 0, error: BaseException | None = None
) -> tuple[ClickHouseSink, FlakyWarehouse, IngestMetrics]:
    metrics = IngestMetrics()
    wh = FlakyWarehouse(metrics, failures, error)
    sink = ClickHouseSink(wh, metrics, max_backoff_s=0.004, first_backoff_s=0.001)
    return sink, wh, metrics


def test_write_without_failures_inserts_once_and_stays_healthy() -> None:
    sink, wh, metrics = make_sink()
    try:
        asyncio.run(sink.write({"city_events_log": rows(3)}))
    finally:
        sink.close()
    assert wh.calls == 1
    assert wh.inserted == {"city_events_log": rows(3)}
    assert errors_for(metrics, "city_events_log") == 0
    assert gauge(metrics, "citystream_sink_healthy") == 1
    assert sink.healthy is True


def test_write_retries_until_the_insert_succeeds_and_inserts_exactly_once() -> None:
    sink, wh, metrics = make_sink(failures=3)
    try:
        asyncio.run(sink.write({"city_events_log": rows(5)}))
    finally:
        sink.close()
    assert wh.calls == 4
    # The rows of the failed attempts were not recorded; the successful one is there once.
    assert wh.inserted == {"city_events_log": rows(5)}
    assert errors_for(metrics, "city_events_log") == 3
    # Unhealthy from the first failure until the insert succeeds, then healthy again.
    assert wh.healthy_seen[1:] == [0.0, 0.0, 0.0]
    assert gauge(metrics, "citystream_sink_healthy") == 1
    assert sink.healthy is True


def test_healthy_gauge_drops_to_zero_while_failing_and_returns_to_one() -> None:
    sink, wh, metrics = make_sink(failures=2)
    # A previous flush succeeded: the gauge reads 1 before this write starts.
    metrics.sink_healthy.set(1)
    try:
        asyncio.run(sink.write({"t": rows(1)}))
    finally:
        sink.close()
    assert wh.healthy_seen == [1.0, 0.0, 0.0]
    assert gauge(metrics, "citystream_sink_healthy") == 1


def test_healthy_flag_is_false_while_inserts_fail() -> None:
    sink, wh, _ = make_sink(failures=2)
    flags: list[bool] = []
    original = wh.insert

    def insert(table: str, batch: list[dict[str, Any]]) -> None:
        flags.append(sink.healthy)
        original(table, batch)

    wh.insert = insert  # type: ignore[method-assign]
    try:
        asyncio.run(sink.write({"t": rows(1)}))
    finally:
        sink.close()
    assert flags == [True, False, False]
    assert sink.healthy is True


def test_oserror_is_retried_too() -> None:
    sink, wh, metrics = make_sink(failures=1, error=ConnectionResetError("reset by peer"))
    try:
        asyncio.run(sink.write({"t": rows(2)}))
    finally:
        sink.close()
    assert wh.inserted == {"t": rows(2)}
    assert errors_for(metrics, "t") == 1


def test_errors_are_counted_per_table() -> None:
    sink, wh, metrics = make_sink(failures=2)
    try:
        asyncio.run(sink.write({"a_log": rows(1, "a"), "b_log": rows(2, "b")}))
    finally:
        sink.close()
    # The first table absorbs both failures; the second goes in at the first try.
    assert errors_for(metrics, "a_log") == 2
    assert errors_for(metrics, "b_log") == 0
    assert wh.inserted == {"a_log": rows(1, "a"), "b_log": rows(2, "b")}


def test_a_non_retryable_error_propagates_instead_of_looping() -> None:
    sink, wh, metrics = make_sink(failures=10**6, error=TypeError("cannot send set"))

    async def run() -> None:
        await asyncio.wait_for(sink.write({"t": rows(1)}), timeout=2)

    try:
        with pytest.raises(TypeError, match="cannot send set"):
            asyncio.run(run())
    finally:
        sink.close()
    assert wh.calls == 1
    assert errors_for(metrics, "t") == 0
    assert wh.inserted == {}


def test_backoff_doubles_up_to_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("processors.sink.asyncio.sleep", fake_sleep)
    metrics = IngestMetrics()
    wh = FlakyWarehouse(metrics, failures=5)
    sink = ClickHouseSink(wh, metrics, max_backoff_s=0.5, first_backoff_s=0.1)
    try:
        asyncio.run(sink.write({"t": rows(1)}))
    finally:
        sink.close()
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_batch_rows_histogram_is_observed_per_table() -> None:
    sink, _, metrics = make_sink(failures=1)
    try:
        asyncio.run(sink.write({"a_log": rows(3), "b_log": rows(7)}))
    finally:
        sink.close()
    reg = metrics.registry
    assert reg.get_sample_value("citystream_sink_batch_rows_count", {"table": "a_log"}) == 1
    assert reg.get_sample_value("citystream_sink_batch_rows_sum", {"table": "a_log"}) == 3
    assert reg.get_sample_value("citystream_sink_batch_rows_count", {"table": "b_log"}) == 1
    assert reg.get_sample_value("citystream_sink_batch_rows_sum", {"table": "b_log"}) == 7
    # One flush timing per write, however many tables it held.
    assert reg.get_sample_value("citystream_sink_flush_seconds_count") == 1


def test_query_runs_on_the_warehouse_and_close_closes_it() -> None:
    sink, wh, _ = make_sink()
    result = asyncio.run(sink.query("SELECT 1"))
    sink.close()
    assert result.scalar() == 1
    assert wh.queries == ["SELECT 1"]
    assert wh.closed is True
