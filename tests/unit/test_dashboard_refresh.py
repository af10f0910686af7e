"""The dashboards' refresh on the embedded engine (migration 0007): the SQL derived from
0003's materialized views, the watermark, the refresher against a fake warehouse, the
sink's listener and the worker hook."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from processors.dashboard_refresh import DashboardRefresher, add_dashboard_refresh
from processors.metrics import IngestMetrics
from processors.sink import ClickHouseSink
from schemas.dashboard_refresh import (
    KEYS,
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
    new_rows,
    new_rows_statements,
    parse_feeds,
    parts_sql,
    refresh_statements,
    staging_statements,
    tables_sql,
)
from schemas.migrations import MIGRATIONS_DIR, Migration, discover
from streams.clickhouse import QueryResult, WarehouseError

# --- the SQL, derived from 0003 -------------------------------------------------------------


def _migration(version: int, engine: str | None) -> Migration:
    return next(
        m for m in discover("modern", MIGRATIONS_DIR, engine) if m.version == version  # type: ignore[arg-type]
    )


def test_the_feeds_are_0003s_four_views() -> None:
    feeds = dashboard_feeds()
    assert [(f.view, f.target, f.source) for f in feeds] == [
        ("dashboard_reports_hourly_mv", "dashboard_reports_hourly", "dispatch_decisions_log"),
        ("dashboard_places_hourly_mv", "dashboard_places_hourly", "dispatch_decisions_log"),
        ("dashboard_feedback_hourly_mv", "dashboard_feedback_hourly", "dispatch_feedback_log"),
        ("review_items_mv", "review_items", "dispatch_decisions_log"),
    ]


def test_the_feeds_select_what_0003s_backfill_selects() -> None:
    # 0003 writes each SELECT twice (view and backfill): the refresher's is the same text.
    backfills = {
        s.split("\n", 1)[0].removeprefix("INSERT INTO "): s.split("\n", 1)[1]
        for s in _migration(3, "chdb").statements()
        if s.startswith("INSERT INTO")
    }
    for feed in dashboard_feeds():
        assert feed.select == backfills[feed.target]
        assert feed.insert_from(feed.source) == f"INSERT INTO {feed.target}\n{feed.select}"


def test_0007_drops_exactly_0003s_views_on_chdb_only() -> None:
    chdb = _migration(7, "chdb")
    server = _migration(7, "server")
    assert chdb.name == server.name == "dashboard_refresh"
    assert server.statements() == []  # the server keeps its views
    assert _migration(7, None).sql == server.sql  # a modern server without engine
    assert [s for s in chdb.statements() if s.startswith("ALTER")] == [
        f"ALTER TABLE {log} MODIFY SETTING enable_block_number_column = 1" for log in LOGS
    ]
    drops = [s for s in chdb.statements() if s.startswith("DROP TABLE IF EXISTS")]
    assert drops == [f"DROP TABLE IF EXISTS {f.view}" for f in dashboard_feeds()]
    state = [s for s in chdb.statements() if STATE_TABLE in s]
    assert state[0].startswith(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE}\n")
    # The watermark is recorded before the views go (rows taken twice are harmless,
    # rows taken by neither would be lost).
    insert = chdb.statements().index(state[1])
    assert state[1].startswith(f"INSERT INTO {STATE_TABLE}\n")
    assert all(f"'{log}'" in state[1] for log in LOGS)
    assert insert < min(chdb.statements().index(d) for d in drops)


def test_refresh_statements_read_the_staged_rows() -> None:
    feeds = dashboard_feeds()
    both = refresh_statements(feeds, LOGS)
    assert [s.split("\n", 1)[0] for s in both] == [f"INSERT INTO {f.target}" for f in feeds]
    for feed, statement in zip(feeds, both, strict=True):
        assert f"FROM {STAGING[feed.source]}\n" in statement + "\n"
        assert feed.source not in statement
        # Nothing else changed.
        assert statement.replace(STAGING[feed.source], feed.source) == feed.insert_from(
            feed.source
        )
    only_feedback = refresh_statements(feeds, ["dispatch_feedback_log"])
    assert [s.split("\n", 1)[0] for s in only_feedback] == ["INSERT INTO dashboard_feedback_hourly"]
    assert refresh_statements(feeds, []) == []


def test_new_rows_read_only_the_parts_and_blocks_above_the_mark() -> None:
    feeds = dashboard_feeds()
    statements = new_rows_statements(feeds, [D], {D: 2}, {D})
    assert len(statements) == 3  # the three views over decisions; no feedback
    for statement in statements:
        assert (
            "FROM (SELECT * FROM dispatch_decisions_log WHERE "
            "toUInt64(splitByChar('_', _part)[3]) > 2 AND _block_number > 2)"
        ) in statement
    # A log that does not keep block numbers: whole parts (repeats are harmless).
    assert new_rows(F, 5, False) == (
        "(SELECT * FROM dispatch_feedback_log WHERE toUInt64(splitByChar('_', _part)[3]) > 5)"
    )
    assert new_rows_statements(feeds, [], {}, set(LOGS)) == []
    assert len(new_rows_statements(feeds, LOGS, {}, set(LOGS))) == 4


def test_keys_and_missing_rows() -> None:
    assert keys_sql(D, 1, True) == (
        "SELECT input_id, decided_at_ms FROM (SELECT * FROM dispatch_decisions_log "
        "WHERE toUInt64(splitByChar('_', _part)[3]) > 1 AND _block_number > 1)"
    )
    assert KEYS[F] == ("input_id", "feedback_id")
    inserted = [
        {"input_id": "r7", "decided_at_ms": 1000, "code": ""},  # collapsed by a merge
        {"input_id": "r7", "decided_at_ms": 2000, "code": "A01"},
        {"input_id": "r1", "decided_at_ms": 500},
        {"input_id": "r1", "decided_at_ms": 500},  # delivered twice: still there
    ]
    present = [("r7", 2000), ("r1", 500)]  # as the query returns them (UInt64: a number)
    assert missing_rows(D, inserted, present) == [inserted[0]]
    assert missing_rows(D, inserted, []) == inserted
    feedback = [{"input_id": "r1", "feedback_id": "f1"}]
    assert missing_rows(F, feedback, [("r1", "f1")]) == []


def test_which_logs_keep_block_numbers() -> None:
    assert "name IN ('dispatch_decisions_log', 'dispatch_feedback_log')" in tables_sql()
    rows = [
        (D, "ReplacingMergeTree(decided_at_ms) PARTITION BY toYYYYMM(received_at) ORDER BY "
            "input_id SETTINGS index_granularity = 8192, enable_block_number_column = 1"),
        (F, "ReplacingMergeTree PARTITION BY toYYYYMM(given_at) ORDER BY (input_id, "
            "feedback_id) SETTINGS index_granularity = 8192"),
    ]
    assert block_numbered(rows) == {D}


def test_a_view_is_replaced_word_for_word() -> None:
    feed = Feed("v", "t", "log", "SELECT a FROM log_archive JOIN x USING a")
    with pytest.raises(ValueError, match="one FROM log"):
        feed.select_from("staged")
    feed = Feed("v", "t", "log", "SELECT log_id FROM log\nWHERE log_id != ''")
    assert feed.select_from("staged") == "SELECT log_id FROM staged\nWHERE log_id != ''"


def test_parse_feeds_takes_views_and_refuses_a_join() -> None:
    sql = """
CREATE TABLE IF NOT EXISTS t (x String) ENGINE = Memory;
CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS
SELECT x FROM log;
INSERT INTO t SELECT x FROM log;
"""
    assert parse_feeds(Migration(1, "m", sql)) == (Feed("v", "t", "log", "SELECT x FROM log"),)
    joined = (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS "
        "SELECT x FROM a JOIN (SELECT x FROM b) USING x"
    )
    with pytest.raises(ValueError, match="one table"):
        parse_feeds(Migration(1, "m", joined))


def test_staging_tables_copy_each_logs_structure() -> None:
    assert staging_statements() == [
        "DROP TABLE IF EXISTS dashboard_pending_decisions",
        "CREATE TABLE dashboard_pending_decisions AS dispatch_decisions_log ENGINE = Memory",
        "DROP TABLE IF EXISTS dashboard_pending_feedback",
        "CREATE TABLE dashboard_pending_feedback AS dispatch_feedback_log ENGINE = Memory",
    ]
    assert "table IN ('dispatch_decisions_log', 'dispatch_feedback_log')" in parts_sql()
    assert "active" in parts_sql()


# --- watermarks -----------------------------------------------------------------------------

D, F = LOGS


def test_parts_above_the_mark() -> None:
    marks = Watermarks.from_rows([(D, 4)])
    parts = [
        (D, "all_1_4_2", 4),  # all aggregated
        (D, "all_5_5_0", 5),  # a new insert
        (D, "all_3_6_1", 6),  # a merge that took a new block in: read whole
        (F, "all_1_1_0", 1),  # no mark yet: everything
    ]
    assert marks.parts_above(parts) == {D: ["all_3_6_1", "all_5_5_0"], F: ["all_1_1_0"]}
    assert Watermarks({}).parts_above([]) == {}


def test_advance_only_raises_and_reports_what_moved() -> None:
    marks = Watermarks.from_rows([(D, "7"), (F, 3)])
    assert marks.advance([(D, "a", 5), (D, "b", 9), (F, "c", 3)]) == {D: 9}
    assert marks.blocks == {D: 9, F: 3}
    assert marks.advance([(D, "a", 2)]) == {}  # never lowered (a part list seen late)
    assert marks.get(D) == 9 and marks.get("other") == 0
    assert Watermarks.state_rows({F: 4, D: 9}) == [
        {"source": D, "block": 9},
        {"source": F, "block": 4},
    ]


# --- the refresher against a fake warehouse ---------------------------------------------------


class FakeWarehouse:
    """Records what runs; answers the refresher's queries from its attributes."""

    dialect = "modern"
    engine = "chdb"
    database = "test"

    def __init__(self) -> None:
        self.marks: list[tuple[str, int]] = []
        self.parts: list[tuple[str, str, int]] = []
        self.keys: dict[str, list[tuple[Any, ...]]] = {}
        self.numbered = set(LOGS)
        self.log: list[str] = []
        self.inserted: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail_on: str | None = None

    def command(self, sql: str) -> None:
        if self.fail_on and self.fail_on in sql:
            raise WarehouseError("boom")
        self.log.append(sql)

    def query(self, sql: str, settings: Any = None) -> QueryResult:
        self.log.append(sql)
        rows: list[Any]
        if sql == WATERMARKS_SQL:
            rows = list(self.marks)
        elif sql.startswith("SELECT name, engine_full"):
            rows = [(t, "x, enable_block_number_column = 1") for t in self.numbered]
        elif sql.startswith("SELECT table, name"):
            rows = list(self.parts)
        else:
            log = D if "FROM dispatch_decisions_log" in sql else F
            rows = self.keys.get(log, [])
        return QueryResult([], [], rows)

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.log.append(f"insert {table} {len(rows)}")
        self.inserted.append((table, rows))

    def close(self) -> None:
        pass


def _kinds(log: list[str]) -> list[str]:
    out = []
    for entry in log:
        first = entry.split("\n", 1)[0]
        if first.startswith("INSERT INTO") and "_part" in entry:
            first += " (log)"
        elif first.startswith("INSERT INTO"):
            first += " (staged)"
        elif first.startswith("SELECT input_id"):
            first = "keys " + ("decisions" if "decisions" in first else "feedback")
        out.append(re.sub(r"\s+", " ", first)[:90])
    return out


PARTS = parts_sql()[:90]


def test_a_refresh_reads_the_new_blocks_and_stages_only_collapsed_rows() -> None:
    wh = FakeWarehouse()
    wh.marks = [(D, 2)]
    wh.parts = [(D, "all_1_2_1", 2), (D, "all_3_4_1", 4), (F, "all_1_1_0", 1)]
    # r7's first decision was merged into its second before the refresh.
    wh.keys = {D: [("r7", 2000), ("r1", 500)]}
    refresher = DashboardRefresher(persist_every_s=0)
    r7_review = {"input_id": "r7", "decided_at_ms": 1000}
    refresher.observe(D, [r7_review, {"input_id": "r1", "decided_at_ms": 500}])
    refresher.observe("city_events_log", [{"x": 1}])  # not a log the dashboards read
    refresher.observe(D, [{"input_id": "r7", "decided_at_ms": 2000}])
    result = refresher.refresh(wh)  # type: ignore[arg-type]
    assert (result.rows, result.parts_read, result.recovered) == ({D: 3}, 2, 1)
    assert _kinds(wh.log) == [
        *staging_statements(),
        tables_sql()[:90],
        WATERMARKS_SQL,
        PARTS,
        "INSERT INTO dashboard_reports_hourly (log)",
        "INSERT INTO dashboard_places_hourly (log)",
        "INSERT INTO dashboard_feedback_hourly (log)",  # the feedback log's first rows
        "INSERT INTO review_items (log)",
        "keys decisions",  # after the reads: a row gone by now may have been missed
        "TRUNCATE TABLE dashboard_pending_decisions",
        "insert dashboard_pending_decisions 1",
        "INSERT INTO dashboard_reports_hourly (staged)",
        "INSERT INTO dashboard_places_hourly (staged)",
        "INSERT INTO review_items (staged)",
        "TRUNCATE TABLE dashboard_pending_decisions",
        f"insert {STATE_TABLE} 2",  # from the one parts list (merges make no new blocks)
    ]
    keys = next(e for e in wh.log if e.startswith("SELECT input_id"))
    assert "[3]) > 2 AND _block_number > 2)" in keys
    feedback = next(e for e in wh.log if e.startswith("INSERT INTO dashboard_feedback"))
    assert "[3]) > 0 AND _block_number > 0)" in feedback
    assert wh.inserted[0] == (STAGING[D], [r7_review])
    assert wh.inserted[-1] == (STATE_TABLE, [{"source": D, "block": 4}, {"source": F, "block": 1}])

    # Nothing inserted since: nothing runs (every insert goes through the sink).
    wh.log.clear()
    result = refresher.refresh(wh)  # type: ignore[arg-type]
    assert (result.rows, result.parts_read, result.recovered) == ({}, 0, 0)
    assert wh.log == []

    # A verdict: its one view, read from the log; the watermark moves for it alone.
    wh.log.clear()
    wh.parts.append((F, "all_2_2_0", 2))
    wh.keys = {F: [("r1", "f1")]}
    refresher.observe(F, [{"input_id": "r1", "feedback_id": "f1"}])
    refresher.refresh(wh)  # type: ignore[arg-type]
    assert _kinds(wh.log) == [
        PARTS,
        "INSERT INTO dashboard_feedback_hourly (log)",
        "keys feedback",
        f"insert {STATE_TABLE} 1",
    ]


def test_the_watermark_is_stored_at_most_every_persist_interval() -> None:
    wh = FakeWarehouse()
    refresher = DashboardRefresher(persist_every_s=3600)
    for block in (1, 2, 3):
        wh.parts.append((D, f"all_{block}_{block}_0", block))
        wh.keys = {D: [("a", block)]}
        refresher.observe(D, [{"input_id": "a", "decided_at_ms": block}])
        refresher.refresh(wh)  # type: ignore[arg-type]
    # The first refresh stores it; later ones wait (a restart reads a little more again).
    assert [rows for table, rows in wh.inserted if table == STATE_TABLE] == [
        [{"source": D, "block": 1}]
    ]
    refresher._persist_every_s = 0
    wh.parts.append((F, "all_1_1_0", 1))
    wh.keys = {F: [("a", "f")]}
    refresher.observe(F, [{"input_id": "a", "feedback_id": "f"}])
    refresher.refresh(wh)  # type: ignore[arg-type]
    assert wh.inserted[-1] == (STATE_TABLE, [{"source": D, "block": 3}, {"source": F, "block": 1}])


def test_a_log_without_block_numbers_is_read_by_whole_parts() -> None:
    wh = FakeWarehouse()
    wh.numbered = {F}
    wh.parts = [(D, "all_1_1_0", 1)]
    wh.keys = {D: [("a", 1)]}
    refresher = DashboardRefresher()
    refresher.observe(D, [{"input_id": "a", "decided_at_ms": 1}])
    refresher.refresh(wh)  # type: ignore[arg-type]
    reads = [e for e in wh.log if "_part" in e]
    assert reads and all("_block_number" not in e for e in reads)


def test_a_failed_refresh_keeps_its_rows_for_the_next() -> None:
    wh = FakeWarehouse()
    refresher = DashboardRefresher()
    refresher.observe(D, [{"input_id": "a"}])
    refresher.refresh(wh)  # type: ignore[arg-type]  # no parts: staged
    refresher.observe(D, [{"input_id": "b"}])
    wh.fail_on = "INSERT INTO dashboard_places_hourly"
    with pytest.raises(WarehouseError):
        refresher.refresh(wh)  # type: ignore[arg-type]
    refresher.observe(D, [{"input_id": "c"}])
    assert refresher.pending_rows() == 2
    wh.fail_on = None
    wh.inserted.clear()
    assert refresher.refresh(wh).rows == {D: 2}  # type: ignore[arg-type]
    assert wh.inserted[0] == (STAGING[D], [{"input_id": "b"}, {"input_id": "c"}])


def test_a_failed_start_is_tried_again() -> None:
    wh = FakeWarehouse()
    wh.parts = [(D, "all_1_1_0", 1)]
    wh.fail_on = "CREATE TABLE dashboard_pending_feedback"
    refresher = DashboardRefresher()
    with pytest.raises(WarehouseError):
        refresher.refresh(wh)  # type: ignore[arg-type]
    wh.fail_on = None
    wh.log.clear()
    assert refresher.refresh(wh).parts_read == 1  # type: ignore[arg-type]
    assert wh.log[0] == staging_statements()[0]


# --- the sink's listener and thread -----------------------------------------------------------


class ThreadWarehouse(FakeWarehouse):
    def __init__(self, fail_first: int = 0) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.fail_first = fail_first

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.threads.append(threading.current_thread().name)
        if self.fail_first:
            self.fail_first -= 1
            raise WarehouseError("gone")
        super().insert(table, rows)


def test_listeners_hear_each_insert_that_succeeded_on_the_sinks_thread() -> None:
    wh = ThreadWarehouse(fail_first=1)
    sink = ClickHouseSink(wh, IngestMetrics(), max_backoff_s=0.002, first_backoff_s=0.001)  # type: ignore[arg-type]
    heard: list[tuple[str, int, str]] = []
    sink.add_insert_listener(
        lambda table, rows: heard.append((table, len(rows), threading.current_thread().name))
    )
    asyncio.run(sink.write({D: [{"a": 1}, {"a": 2}], F: [{"b": 1}]}))
    assert [(t, n) for t, n, _ in heard] == [(D, 2), (F, 1)]  # once each, after the retry
    assert {name for *_, name in heard} == set(wh.threads) == {wh.threads[0]}
    assert wh.threads[0].startswith("clickhouse-sink")
    assert sink.engine == "chdb"
    ran_on = asyncio.run(sink.run(lambda w: (w is wh, threading.current_thread().name)))
    assert ran_on == (True, wh.threads[0])
    sink.close()


class FakeApp:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], Any]]] = []

    def timer(self, interval: float) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        def register(fn: Callable[[], Any]) -> Callable[[], Any]:
            self.timers.append((interval, fn))
            return fn

        return register


class _State:
    def __init__(self, sink: ClickHouseSink) -> None:
        from streams.settings import Settings

        self.sink = sink
        self.settings = Settings(dashboard_refresh_interval_s=0.5)


def test_the_worker_hook_registers_only_on_chdb() -> None:
    server = ThreadWarehouse()
    server.engine = "server"  # type: ignore[assignment]
    sink = ClickHouseSink(server, IngestMetrics(), max_backoff_s=0.01)  # type: ignore[arg-type]
    app = FakeApp()
    assert add_dashboard_refresh(app, _State(sink)) is None  # type: ignore[arg-type]
    assert app.timers == []
    sink.close()

    wh = ThreadWarehouse()
    sink = ClickHouseSink(wh, IngestMetrics(), max_backoff_s=0.01)  # type: ignore[arg-type]
    refresher = add_dashboard_refresh(app, _State(sink))  # type: ignore[arg-type]
    assert refresher is not None
    [(interval, tick)] = app.timers
    assert interval == 0.5

    async def run() -> None:
        await sink.write({D: [{"input_id": "a"}]})
        assert refresher.pending_rows() == 1
        await tick()
        assert refresher.pending_rows() == 0
        wh.fail_on = "INSERT INTO review_items"
        await sink.write({D: [{"input_id": "b"}]})
        await tick()  # logged, not raised; the row waits for the next tick
        assert refresher.pending_rows() == 1

    asyncio.run(run())
    assert (STAGING[D], [{"input_id": "a"}]) in wh.inserted
    sink.close()


def test_the_setting_defaults_to_two_seconds() -> None:
    from streams.settings import Settings

    assert Settings().dashboard_refresh_interval_s == 2.0
