"""read_only: the SQL guard of the /query page (one read, nothing that writes)."""

from __future__ import annotations

import pytest

from streams.query import QueryRefused, read_only


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select count() from city_events_log",
        "  SeLeCt district FROM city_events ORDER BY district  ",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "with 1 as y select y",
        "SHOW TABLES",
        "DESCRIBE TABLE city_events_log",
        "describe city_events_log",
        "DESC city_events_log",
        "EXISTS TABLE city_events_log",
        "\n\tSELECT\n  1\n",
    ],
)
def test_reads_are_allowed(sql: str) -> None:
    assert read_only(sql) == sql.strip()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;", "SELECT 1"),
        ("SELECT 1 ;  ", "SELECT 1"),
        ("  select 1;;", "select 1"),
    ],
)
def test_a_trailing_semicolon_is_dropped(sql: str, expected: str) -> None:
    assert read_only(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO city_events_log VALUES (1)",
        "insert into t select 1",
        "DROP TABLE city_events_log",
        "drop database citystream",
        "ALTER TABLE t DELETE WHERE 1",
        "CREATE TABLE t (x UInt8) ENGINE = Memory",
        "TRUNCATE TABLE t",
        "RENAME TABLE a TO b",
        "ATTACH TABLE t",
        "DETACH TABLE t",
        "OPTIMIZE TABLE t FINAL",
        "SYSTEM SHUTDOWN",
        "system drop dns cache",
        "KILL QUERY WHERE 1",
        "GRANT ALL ON *.* TO x",
        "SET readonly = 0",
        "set max_memory_usage = 1",
        "USE system",
        "EXPLAIN SELECT 1",
        "OPTIMIZE TABLE t",
    ],
)
def test_statements_that_are_not_reads_are_refused(sql: str) -> None:
    with pytest.raises(QueryRefused):
        read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        # A read that smuggles a write word in: refused (errs on the side of refusing).
        "SELECT * FROM t SETTINGS readonly = 0, SET x = 1",
        "WITH (SELECT 1) AS x INSERT INTO t SELECT x",
        "SELECT 1 FROM t; INSERT INTO t VALUES (1)",
    ],
)
def test_write_words_outside_literals_are_refused_even_after_select(sql: str) -> None:
    with pytest.raises(QueryRefused):
        read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DROP TABLE x",
        "SELECT 1; SELECT 2",
        "SELECT 1;SELECT 2;",
        "SHOW TABLES; SHOW DATABASES",
    ],
)
def test_two_statements_are_refused(sql: str) -> None:
    with pytest.raises(QueryRefused, match="one statement"):
        read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'drop; table'",
        "SELECT 'insert into t values (1); drop table x' AS s",
        'SELECT "weird;name" FROM t',
        "SELECT `drop` FROM t",
        "SELECT 'it\\'s; drop' AS s",
        "SELECT count() FROM t WHERE description LIKE '%SET%;%'",
    ],
)
def test_semicolons_and_write_words_inside_literals_are_fine(sql: str) -> None:
    assert read_only(sql) == sql


def test_a_literal_does_not_hide_a_second_statement() -> None:
    with pytest.raises(QueryRefused, match="one statement"):
        read_only("SELECT 'a;b'; DROP TABLE x")


def test_write_word_in_a_column_name_substring_is_fine() -> None:
    # \b boundaries: created_at, settings_x, dropped are not the words CREATE/SET/DROP.
    sql = "SELECT created_at, offset_set, dropped FROM t"
    assert read_only(sql) == sql


@pytest.mark.parametrize("sql", ["", "   ", ";", " ; ", "\n;\n"])
def test_empty_queries_are_refused(sql: str) -> None:
    with pytest.raises(QueryRefused, match="empty"):
        read_only(sql)


def test_over_long_queries_are_refused() -> None:
    sql = "SELECT " + "1+" * 20 + "1"
    assert read_only(sql, max_chars=len(sql)) == sql
    with pytest.raises(QueryRefused, match="longer than"):
        read_only(sql, max_chars=len(sql) - 1)
    with pytest.raises(QueryRefused, match="longer than 20000"):
        read_only("SELECT '" + "x" * 20_000 + "'")


def test_refusal_is_a_value_error() -> None:
    assert issubclass(QueryRefused, ValueError)


def test_the_write_word_is_named_in_the_refusal() -> None:
    with pytest.raises(QueryRefused, match="DROP is not allowed"):
        read_only("SELECT * FROM t WHERE 1 = 1 AND drop")


def test_limits_and_format_are_not_the_querys_to_set():
    import pytest as _pytest

    from streams.query import QueryRefused as _Refused
    from streams.query import read_only as _read_only

    for sql in ("SELECT 1 SETTINGS max_result_rows = 0", "SELECT 1 FORMAT CSV",
                "SELECT 1 INTO OUTFILE '/tmp/x'"):
        with _pytest.raises(_Refused, match="set by citystream"):
            _read_only(sql)
    # The words inside literals or function names are fine.
    assert _read_only("SELECT formatDateTime(now(), '%F'), 'SETTINGS'")


def test_query_limits_only_for_selects_and_cut_flags_truncation():
    from streams.clickhouse import QueryResult
    from streams.query import cut, query_limits

    limits = query_limits("WITH 1 AS a SELECT a", 100, 5)
    assert limits == {"max_result_rows": 101, "result_overflow_mode": "break",
                      "max_execution_time": 5}
    assert query_limits("DESCRIBE TABLE city_events", 100, 5) == {}
    rows = [(i,) for i in range(150)]
    result, truncated = cut(QueryResult(["n"], ["UInt8"], rows), 100)
    assert truncated and result.truncated and len(result.rows) == 100
    result, truncated = cut(QueryResult(["n"], ["UInt8"], rows[:100]), 100)
    assert not truncated and len(result.rows) == 100


def test_system_tables_are_reads_but_system_statements_are_not():
    import pytest as _pytest

    from streams.query import QueryRefused as _Refused
    from streams.query import read_only as _read_only

    assert _read_only("SELECT name FROM system.tables")
    with _pytest.raises(_Refused, match="SYSTEM"):
        _read_only("SELECT 1 WHERE 1 IN (SYSTEM FLUSH LOGS)")
