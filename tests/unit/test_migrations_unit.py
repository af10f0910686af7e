"""Migrations (discover, statements, migrate against a fake) and the ClickHouse helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.ingest import IngestContext, StoredRow, dead_letter_row, ingest
from schemas.errors import DeadLetter
from schemas.migrations import (
    MIGRATIONS_DIR,
    Migration,
    MigrationError,
    added_column,
    discover,
    migrate,
)
from streams.clickhouse import QueryResult, _check_identifier, dialect_for, json_each_row

from .factories import RECEIVED_AT, citizen_appeal, city_event, encode, message, video_frame

# --- discover ------------------------------------------------------------------------------


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql, "utf-8")


def test_discover_orders_by_version(tmp_path: Path) -> None:
    _write(tmp_path, "0010_later.sql", "SELECT 10")
    _write(tmp_path, "0002_second.sql", "SELECT 2")
    _write(tmp_path, "0001_first.sql", "SELECT 1")
    found = discover("modern", tmp_path)
    assert [(m.version, m.name) for m in found] == [(1, "first"), (2, "second"), (10, "later")]
    assert found[0].sql == "SELECT 1"


def test_discover_refuses_two_files_with_one_version(tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "SELECT 1")
    _write(tmp_path, "0001_other.sql", "SELECT 2")
    with pytest.raises(MigrationError, match="share a version"):
        discover("modern", tmp_path)


def test_discover_ignores_files_that_are_not_migrations(tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "SELECT 1")
    _write(tmp_path, "notes.sql", "SELECT 'x'")
    _write(tmp_path, "1_short.sql", "SELECT 'x'")
    _write(tmp_path, "0002_Upper.sql", "SELECT 'x'")
    _write(tmp_path, "0003_readme.txt", "not sql")
    assert [m.name for m in discover("modern", tmp_path)] == ["first"]


def test_a_dialect_variant_replaces_its_base_file(tmp_path: Path) -> None:
    _write(tmp_path, "0001_tables.sql", "CREATE TABLE IF NOT EXISTS t (x DateTime64)")
    _write(tmp_path, "0001_tables.legacy.sql", "CREATE TABLE IF NOT EXISTS t (x DateTime)")
    legacy = discover("legacy", tmp_path)
    modern = discover("modern", tmp_path)
    # The variant is not a migration of its own (no version clash), it swaps the SQL.
    assert [(m.version, m.name) for m in legacy] == [(1, "tables")]
    assert legacy[0].sql.endswith("(x DateTime)")
    assert modern[0].sql.endswith("(x DateTime64)")
    assert legacy[0].checksum != modern[0].checksum


def test_an_engine_variant_wins_over_the_dialects(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 'base'")
    _write(tmp_path, "0001_a.legacy.sql", "SELECT 'legacy'")
    _write(tmp_path, "0001_a.chdb.sql", "SELECT 'chdb'")
    _write(tmp_path, "0002_b.sql", "SELECT 'base'")
    _write(tmp_path, "0002_b.server.sql", "SELECT 'server'")

    def chosen(dialect: str, engine: str | None) -> list[str]:
        return [m.sql for m in discover(dialect, tmp_path, engine)]  # type: ignore[arg-type]

    assert chosen("modern", "chdb") == ["SELECT 'chdb'", "SELECT 'base'"]
    assert chosen("modern", "server") == ["SELECT 'base'", "SELECT 'server'"]
    assert chosen("legacy", "server") == ["SELECT 'legacy'", "SELECT 'server'"]
    assert chosen("legacy", None) == ["SELECT 'legacy'", "SELECT 'base'"]
    assert chosen("modern", None) == ["SELECT 'base'", "SELECT 'base'"]
    assert [m.name for m in discover("modern", tmp_path, "chdb")] == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "error"),
    [("0001_a.chDB.sql", "unknown variant"), ("0001_a.embedded.sql", "unknown variant"),
     ("0002_b.chdb.sql", "without its base")],
)
def test_a_misnamed_or_orphaned_variant_is_refused(tmp_path: Path, name: str, error: str) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 1")
    _write(tmp_path, name, "SELECT 2")
    with pytest.raises(MigrationError, match=error):
        discover("modern", tmp_path, "chdb")


def test_migrate_takes_the_warehouses_engine_variant(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 'server'")
    _write(tmp_path, "0001_a.chdb.sql", "SELECT 'chdb'")
    for engine in ("chdb", "server"):
        wh = LedgerWarehouse()
        wh.engine = engine
        ran = migrate(wh, tmp_path)  # type: ignore[arg-type]
        assert wh.commands[1:] == [f"SELECT '{engine}'"]
        assert wh.inserted[0][1][0]["checksum"] == ran[0].checksum


def test_empty_directory(tmp_path: Path) -> None:
    assert discover("modern", tmp_path) == []


# --- statements ----------------------------------------------------------------------------


def test_statements_drop_comment_lines_and_split_on_semicolons() -> None:
    sql = """-- a header; with a semicolon in the comment
CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Memory;

   -- an indented comment
CREATE VIEW IF NOT EXISTS b AS SELECT * FROM a;
;
"""
    assert Migration(1, "m", sql).statements() == [
        "CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Memory",
        "CREATE VIEW IF NOT EXISTS b AS SELECT * FROM a",
    ]


def test_a_last_statement_without_semicolon_is_kept() -> None:
    assert Migration(1, "m", "SELECT 1;\nSELECT 2").statements() == ["SELECT 1", "SELECT 2"]


def test_only_comments_means_no_statements() -> None:
    assert Migration(1, "m", "-- nothing\n  -- here;\n\n").statements() == []


def test_checksum_follows_the_sql() -> None:
    a = Migration(1, "m", "SELECT 1")
    assert a.checksum == Migration(2, "other", "SELECT 1").checksum
    assert a.checksum != Migration(1, "m", "SELECT 2").checksum
    assert re.fullmatch(r"[0-9a-f]{16}", a.checksum)


def test_the_real_migrations_are_idempotent_ddl() -> None:
    migrations = discover("modern", MIGRATIONS_DIR)
    assert migrations[0].version == 1
    statements = migrations[0].statements()
    assert len(statements) == 8
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    views = [s for s in statements if s.startswith("CREATE VIEW")]
    assert len(tables) == 4
    assert len(views) == 4
    for statement in statements:
        assert statement.startswith(("CREATE TABLE IF NOT EXISTS", "CREATE VIEW IF NOT EXISTS"))
        assert "--" not in statement
    every = [
        *migrations,
        *discover("legacy", MIGRATIONS_DIR),
        *discover("modern", MIGRATIONS_DIR, "chdb"),
        *discover("modern", MIGRATIONS_DIR, "server"),
        *discover("legacy", MIGRATIONS_DIR, "server"),
    ]
    for migration in every:
        for statement in migration.statements():
            assert _can_run_again(statement), statement


def _can_run_again(statement: str) -> bool:
    """IF [NOT] EXISTS; a backfill into a table where repeats collapse (0003), a
    watermark that only grows or a table setting (0007); or, on 18.16 (no ADD COLUMN IF
    NOT EXISTS), a single ADD COLUMN the runner skips when done."""
    if "IF NOT EXISTS" in statement or statement.startswith("DROP TABLE IF EXISTS "):
        return True
    repeats_collapse = r"INSERT INTO (dashboard_\w+_hourly|review_items|dashboard_refresh_state)\n"
    if re.match(repeats_collapse, statement):
        return True
    if re.fullmatch(r"ALTER TABLE \w+ MODIFY SETTING [\w, =]+", statement):
        return True  # setting a table setting again is harmless
    return added_column(statement) is not None


# --- the rows the ingest produces fit the tables -------------------------------------------


def _columns(table: str) -> list[str]:
    sql = discover("modern", MIGRATIONS_DIR)[0].statements()
    create = next(s for s in sql if s.startswith(f"CREATE TABLE IF NOT EXISTS {table}\n"))
    body = create.split("(", 1)[1].split("\n)\n", 1)[0]
    return [line.split()[0] for line in body.strip().splitlines()]


@pytest.mark.parametrize(
    ("rec", "topic"),
    [
        (city_event(), "city.events"),
        (citizen_appeal(), "citizen.appeals"),
        (video_frame(), "frames.refs"),
    ],
)
def test_ingested_rows_have_exactly_the_table_columns(
    ctx: IngestContext, rec: dict[str, Any], topic: str
) -> None:
    result = ingest(message(encode(rec), topic), ctx, RECEIVED_AT)
    assert isinstance(result, StoredRow), result
    assert list(result.row) == _columns_after_migrations(result.table)
    for extra in result.extra:  # the raw appeal for the restricted table
        assert list(extra.row) == _columns_after_migrations(extra.table)


def _columns_after_migrations(table: str, dialect: str = "modern") -> list[str]:
    """The table's columns as CREATE TABLE made them, then every ADD COLUMN ... AFTER."""
    columns: list[str] = []
    for migration in discover(dialect, MIGRATIONS_DIR):  # type: ignore[arg-type]
        for s in migration.statements():
            if s.startswith(f"CREATE TABLE IF NOT EXISTS {table}\n"):
                body = s.split("(", 1)[1].split("\n)\n", 1)[0]
                columns = [line.split()[0] for line in body.strip().splitlines()]
            added = re.match(
                rf"ALTER TABLE {table} ADD COLUMN (?:IF NOT EXISTS )?(\w+) .* AFTER (\w+)$", s
            )
            appended = re.match(rf"ALTER TABLE {table} ADD COLUMN (\w+) [^,]*$", s)
            if added:
                columns.insert(columns.index(added.group(2)) + 1, added.group(1))
            elif appended:
                columns.append(appended.group(1))
    return columns


def _decision(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "dispatch_decision",
        "schema_version": 1,
        "input_id": "AP-2026-0001",
        "input_kind": "citizen_appeal",
        "channel": "hotline_12345",
        "text": "小区门口垃圾三天没人清理",
        "code": "A01",
        "event_name": "暴露垃圾",
        "urgency": "normal",
        "route": "S",
        "unit": "八大湖街道办事处",
        "district": "市南区",
        "street": "八大湖街道",
        "road": "香港中路",
        "place": "五四广场",
        "confidence": 0.93,
        "auto": True,
        "backend": "onnxruntime",
        "received_at": "2026-11-26T08:29:00+08:00",
        "respond_by": "2026-11-27T08:29:00+08:00",
        "decided_at": "2026-11-26T08:29:01+08:00",
    }
    rec.update(overrides)
    return rec


def _feedback(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "dispatch_feedback",
        "schema_version": 1,
        "feedback_id": "fb-1",
        "input_id": "AP-2026-0001",
        "verdict": "confirmed",
        "unit": "八大湖街道办事处",
        "dispatcher_id": "d7",
        "given_at": "2026-11-26T08:40:00+08:00",
        "auto": False,
        "decided_unit": "八大湖街道办事处",
        "received_at": "2026-11-26T08:29:00+08:00",
        "respond_by": "2026-11-27T08:29:00+08:00",
    }
    rec.update(overrides)
    return rec


@pytest.mark.parametrize("dialect", ["modern", "legacy"])
@pytest.mark.parametrize(
    ("rec", "topic"),
    [
        (_decision(), "dispatch.orders"),
        (_decision(auto=False, unit=None, channel=None, respond_by=None), "dispatch.review"),
        (_feedback(), "dispatch.feedback"),
        (_feedback(auto=None, received_at=None, respond_by=None), "dispatch.feedback"),
    ],
)
def test_dispatch_rows_have_exactly_the_migrated_columns(
    ctx: IngestContext, rec: dict[str, Any], topic: str, dialect: str
) -> None:
    result = ingest(message(encode(rec), topic), ctx, RECEIVED_AT)
    assert isinstance(result, StoredRow), result
    assert list(result.row) == _columns_after_migrations(result.table, dialect)


def test_review_items_hold_what_the_board_shows() -> None:
    from schemas.dashboard import REVIEW_COLUMNS

    assert _columns_after_migrations("review_items") == [*REVIEW_COLUMNS, "decided_at_ms"]


def test_dead_letter_rows_have_exactly_the_table_columns(ctx: IngestContext) -> None:
    result = ingest(message(b"{"), ctx, RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert list(dead_letter_row(result)) == _columns("dead_letters_log")


# --- migrate against a fake warehouse -------------------------------------------------------


class LedgerWarehouse:
    dialect = "modern"
    engine = "server"
    database = "test"

    def __init__(self, ledger: list[tuple[int, str, str]] | None = None) -> None:
        self.commands: list[str] = []
        self.ledger = list(ledger or [])
        self.inserted: list[tuple[str, list[dict[str, Any]]]] = []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str) -> QueryResult:
        assert "schema_migrations" in sql
        return QueryResult(
            ["version", "name", "checksum"], ["UInt32", "String", "String"], [*self.ledger]
        )

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.inserted.append((table, rows))
        for r in rows:
            self.ledger.append((r["version"], r["name"], r["checksum"]))

    def server_version(self) -> str:
        return "26.9.2.1"

    def close(self) -> None:
        pass


def test_migrate_applies_in_order_and_records_each(tmp_path: Path) -> None:
    _write(tmp_path, "0002_b.sql", "CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Memory;")
    _write(tmp_path, "0001_a.sql", "CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Memory;")
    wh = LedgerWarehouse()
    ran = migrate(wh, tmp_path)  # type: ignore[arg-type]
    assert [m.version for m in ran] == [1, 2]
    assert "schema_migrations" in wh.commands[0]
    assert wh.commands[1:] == [
        "CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Memory",
        "CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Memory",
    ]
    assert [t for t, _ in wh.inserted] == ["schema_migrations", "schema_migrations"]
    row = wh.inserted[0][1][0]
    assert (row["version"], row["name"], row["checksum"]) == (1, "a", ran[0].checksum)
    assert row["applied_at"].tzinfo is None
    # A second run applies nothing.
    assert migrate(wh, tmp_path) == []  # type: ignore[arg-type]


def test_migrate_refuses_an_edited_applied_migration(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "CREATE TABLE IF NOT EXISTS a (y UInt8) ENGINE = Memory")
    wh = LedgerWarehouse([(1, "a", "0123456789abcdef")])
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(wh, tmp_path)  # type: ignore[arg-type]
    assert wh.inserted == []


@pytest.mark.parametrize(
    ("statement", "found"),
    [
        ("ALTER TABLE t ADD COLUMN c String AFTER b", ("t", "c")),
        ("alter table t add column c DateTime DEFAULT received_at", ("t", "c")),
        ("ALTER TABLE t ADD COLUMN IF NOT EXISTS c String", None),
        ("ALTER TABLE t ADD COLUMN c String, ADD COLUMN d String", None),
        ("ALTER TABLE t DROP COLUMN c", None),
        ("ALTER TABLE t MODIFY COLUMN c String", None),
        ("CREATE TABLE IF NOT EXISTS t (c String) ENGINE = Memory", None),
    ],
)
def test_added_column(statement: str, found: tuple[str, str] | None) -> None:
    assert added_column(statement) == found


class ColumnsWarehouse(LedgerWarehouse):
    """A warehouse that knows some columns already exist (a half-applied migration)."""

    def __init__(self, dialect: str, existing: set[tuple[str, str]]) -> None:
        super().__init__()
        self.dialect = dialect
        self.existing = existing
        self.lookups: list[str] = []

    def query(self, sql: str) -> QueryResult:
        if "system.columns" not in sql:
            return super().query(sql)
        self.lookups.append(sql)
        table = re.search(r"table = '(\w+)'", sql).group(1)  # type: ignore[union-attr]
        name = re.search(r"name = '(\w+)'", sql).group(1)  # type: ignore[union-attr]
        return QueryResult(["count()"], ["UInt64"], [(int((table, name) in self.existing),)])


_HALF_APPLIED = """
ALTER TABLE t ADD COLUMN a String;
ALTER TABLE t ADD COLUMN b String AFTER a;
CREATE TABLE IF NOT EXISTS u (x UInt8) ENGINE = Memory;
"""


@pytest.mark.parametrize("dialect", ["legacy", "modern"])
def test_rerun_skips_columns_already_added(tmp_path: Path, dialect: str) -> None:
    _write(tmp_path, "0001_m.sql", _HALF_APPLIED)
    wh = ColumnsWarehouse(dialect, {("t", "a")})
    migrate(wh, tmp_path)  # type: ignore[arg-type]
    assert wh.commands[1:] == [
        "ALTER TABLE t ADD COLUMN b String AFTER a",
        "CREATE TABLE IF NOT EXISTS u (x UInt8) ENGINE = Memory",
    ]
    assert len(wh.lookups) == 2
    assert "database = currentDatabase()" in wh.lookups[0]


# --- json_each_row -------------------------------------------------------------------------


def test_json_each_row_formats_naive_and_aware_datetimes_in_utc() -> None:
    cst = timezone(timedelta(hours=8))
    rows = [
        {"t": datetime(2026, 11, 26, 0, 30, 5, 123456)},
        {"t": datetime(2026, 11, 26, 8, 30, 5, tzinfo=cst)},
        {"t": datetime(2026, 11, 26, 0, 30, 5, tzinfo=UTC)},
    ]
    lines = json_each_row(rows).split(b"\n")
    assert [orjson.loads(line)["t"] for line in lines] == ["2026-11-26 00:30:05"] * 3


def test_json_each_row_keeps_chinese_text_as_utf8() -> None:
    out = json_each_row([{"district": "市南区", "n": 1, "w": ["unknown_road"], "x": None}])
    assert "市南区".encode() in out
    assert b"\\u" not in out
    assert orjson.loads(out) == {"district": "市南区", "n": 1, "w": ["unknown_road"], "x": None}


def test_json_each_row_one_line_per_row() -> None:
    assert json_each_row([]) == b""
    out = json_each_row([{"a": 1}, {"a": "line\nbreak"}])
    assert out.count(b"\n") == 1
    assert [orjson.loads(x) for x in out.split(b"\n")] == [{"a": 1}, {"a": "line\nbreak"}]


def test_json_each_row_refuses_what_clickhouse_cannot_take() -> None:
    with pytest.raises(TypeError):
        json_each_row([{"s": {1, 2}}])


# --- dialect_for / _check_identifier --------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "dialect"),
    [
        ("18.16.1", "legacy"),
        ("19.17.4.11", "legacy"),
        ("20.3.1", "modern"),
        ("26.9.2.1", "modern"),
    ],
)
def test_dialect_for(version: str, dialect: str) -> None:
    assert dialect_for(version) == dialect


@pytest.mark.parametrize("name", ["a-b", "1a", "x; drop", "", "a b", "市南", "db.t", "`t`"])
def test_check_identifier_refuses(name: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        _check_identifier(name)


@pytest.mark.parametrize("name", ["db_abc123", "city_events_log", "_private", "T"])
def test_check_identifier_accepts(name: str) -> None:
    _check_identifier(name)
