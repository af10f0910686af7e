"""The dashboard's and the board's SQL builders (no I/O), and migration 0003's text."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from schemas import dashboard
from schemas.dashboard import (
    PANELS,
    board_counts_sql,
    panel,
    recent_decisions_sql,
    recently_handled_sql,
    review_queue_sql,
    sql_datetime,
    sql_limit,
    sql_string,
)
from schemas.migrations import MIGRATIONS_DIR, added_column, discover

SINCE = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
CST = timezone(timedelta(hours=8))

# The front-end is written against these names: a change here is a change of contract.
EXPECTED_PANELS = {
    "totals": (
        "reports",
        "auto_dispatched",
        "auto_rate",
        "auto_with_feedback",
        "auto_correct",
        "auto_accuracy",
        "due",
        "in_time",
        "compliance",
    ),
    "volume_by_hour": ("hour", "channel", "reports"),
    "volume_by_type": ("code", "event_name", "reports"),
    "volume_by_district": ("district", "reports"),
    "hotspots": ("district", "event_class", "reports"),
    "quality_by_hour": (
        "hour",
        "reports",
        "auto_dispatched",
        "auto_rate",
        "auto_with_feedback",
        "auto_correct",
        "auto_accuracy",
    ),
    "compliance_by_unit": ("unit", "due", "in_time", "compliance"),
    "top_places": ("district", "street", "location", "reports", "top_code"),
}
EXPECTED_BOARD = {
    "review_queue": (
        "input_id, received_at, respond_by, decided_at, code, event_name, urgency, unit, "
        "district, street, channel, text, confidence, review_reasons, alt_units, alt_codes, "
        "alt_confidences"
    ),
    "recent": (
        "input_id, decided_at, received_at, code, event_name, urgency, unit, district, street, "
        "channel, confidence, auto, text"
    ),
    "handled": "input_id, verdict, unit, decided_unit, dispatcher_id, given_at",
    "counts": (
        "decisions_last_hour, auto_last_hour, review_waiting, review_overdue, handled_last_hour"
    ),
}


# --- a small reader of the outermost SELECT list ---------------------------------------------


def _strip_literals(sql: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql)


def _top_level_select(sql: str) -> list[str]:
    """The aliases (or bare column names) of the outermost SELECT's list."""
    text = _strip_literals(sql)
    depth, items, current, i = 0, [], [], 0
    start = re.search(r"\bSELECT\b", text)
    assert start is not None
    i = start.end()
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and re.match(r"\s+FROM\b", text[i:]):
            break
        if depth == 0 and ch == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current))
    names = []
    for item in items:
        alias = re.search(r"\bAS\s+(\w+)\s*$", item.strip())
        names.append(alias.group(1) if alias else item.strip())
    for name in names:
        assert re.fullmatch(r"\w+", name), f"an unnamed expression in the SELECT list: {name!r}"
    return names


def test_the_reader_reads_aliases_and_skips_nested_selects() -> None:
    sql = "SELECT a, f(b, (SELECT c FROM t)) AS d, 'x, y' AS e\nFROM (SELECT z FROM u)"
    assert _top_level_select(sql) == ["a", "d", "e"]


# --- panels --------------------------------------------------------------------------------


def test_panels_are_exactly_the_contracted_ones() -> None:
    assert [p.name for p in PANELS] == list(EXPECTED_PANELS)
    for p in PANELS:
        assert p.columns == EXPECTED_PANELS[p.name], p.name
        assert p.title.strip()
    assert panel("totals") is PANELS[0]
    with pytest.raises(KeyError):
        panel("nope")


@pytest.mark.parametrize("p", PANELS, ids=lambda p: p.name)
def test_each_panel_selects_its_declared_columns(p: dashboard.Panel) -> None:
    assert tuple(_top_level_select(p.sql(SINCE, UNTIL))) == p.columns


@pytest.mark.parametrize("p", PANELS, ids=lambda p: p.name)
def test_each_panel_renders_its_bounds_and_nothing_else_quoted(p: dashboard.Panel) -> None:
    sql = p.sql(SINCE, UNTIL)
    assert "toDateTime('2026-11-26 03:00:00', 'UTC')" in sql
    assert "toDateTime('2026-11-27 03:00:00', 'UTC')" in sql
    literals = set(re.findall(r"'((?:[^'\\]|\\.)*)'", sql))
    assert literals <= {"2026-11-26 03:00:00", "2026-11-27 03:00:00", "UTC", ""}, literals
    # Panels read the aggregate tables (and the small review_items), never a whole log
    # except through a lookup by review item id.
    for log in re.findall(r"FROM (dispatch_\w+_log)\b([^)]*)", sql):
        assert "input_id IN (SELECT input_id FROM review_items" in log[1], (p.name, log)


def test_panel_windows_start_at_the_hour_and_end_where_told() -> None:
    sql = dashboard.volume_by_hour_sql(
        datetime(2026, 11, 26, 11, 47, 12, 999999, tzinfo=CST),  # 03:47:12 UTC
        datetime(2026, 11, 26, 5, 30, tzinfo=UTC),
    )
    assert "hour >= toDateTime('2026-11-26 03:00:00', 'UTC')" in sql
    assert "hour < toDateTime('2026-11-26 05:30:00', 'UTC')" in sql


def test_an_empty_or_reversed_window_is_refused() -> None:
    with pytest.raises(ValueError, match="empty window"):
        dashboard.totals_sql(UNTIL, SINCE)
    with pytest.raises(ValueError, match="empty window"):
        # Floored to 03:00, the start is the end.
        dashboard.totals_sql(SINCE + timedelta(minutes=30), SINCE)


# --- rendering -----------------------------------------------------------------------------


def test_datetimes_render_in_utc_to_the_second() -> None:
    assert sql_datetime(datetime(2026, 11, 26, 8, 30, 5, 987654, tzinfo=CST)) == (
        "toDateTime('2026-11-26 00:30:05', 'UTC')"
    )
    # Naive values are UTC, as the tables store them.
    assert sql_datetime(datetime(2026, 11, 26, 0, 30, 5)) == (
        "toDateTime('2026-11-26 00:30:05', 'UTC')"
    )


@pytest.mark.parametrize(
    "value", [date(2026, 11, 26), "2026-11-26 00:00:00", "2026-11-26'); DROP TABLE x; --", 0]
)
def test_only_datetimes_are_rendered(value: object) -> None:
    with pytest.raises(TypeError):
        sql_datetime(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dashboard.totals_sql(value, UNTIL)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [datetime(1969, 12, 31, tzinfo=UTC), datetime(2106, 3, 1, tzinfo=UTC)]
)
def test_datetimes_outside_clickhouse_range_are_refused(value: datetime) -> None:
    with pytest.raises(ValueError, match="outside"):
        sql_datetime(value)


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("市南区", "'市南区'"),
        ("x' OR 1=1 --", "'x\\' OR 1=1 --'"),
        ("a\\' OR '1", "'a\\\\\\' OR \\'1'"),
        ("", "''"),
    ],
)
def test_strings_are_escaped(text: str, literal: str) -> None:
    rendered = sql_string(text)
    assert rendered == literal
    # The literal ends where it should: no unescaped quote inside.
    assert re.fullmatch(r"'(?:[^'\\]|\\.)*'", rendered)


def test_sql_string_takes_strings_only() -> None:
    with pytest.raises(TypeError):
        sql_string(1)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "10", "10; DROP TABLE x", 10_001, None])
def test_bad_limits_are_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        sql_limit(limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        review_queue_sql(SINCE, limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        recent_decisions_sql(SINCE, limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        recently_handled_sql(SINCE, limit)  # type: ignore[arg-type]


def test_good_limits_are_rendered() -> None:
    assert sql_limit(1) == 1 and sql_limit(10_000) == 10_000
    assert review_queue_sql(SINCE, 200).rstrip().endswith("LIMIT 200")
    assert recent_decisions_sql(SINCE, 50).rstrip().endswith("LIMIT 50")
    assert recently_handled_sql(SINCE, 20).rstrip().endswith("LIMIT 20")


# --- the board -----------------------------------------------------------------------------


def test_board_queries_select_the_contracted_columns() -> None:
    now = datetime(2026, 11, 26, 3, 17, 42, tzinfo=UTC)
    built = {
        "review_queue": review_queue_sql(now, 10),
        "recent": recent_decisions_sql(now, 10),
        "handled": recently_handled_sql(now, 10),
        "counts": board_counts_sql(now),
    }
    for name, sql in built.items():
        assert ", ".join(_top_level_select(sql)) == EXPECTED_BOARD[name], name


def test_board_time_bounds() -> None:
    now = datetime(2026, 11, 26, 11, 17, 42, 500000, tzinfo=CST)  # 03:17:42 UTC
    counts = board_counts_sql(now)
    assert "decided_at > toDateTime('2026-11-26 02:17:42', 'UTC')" in counts
    assert "decided_at <= toDateTime('2026-11-26 03:17:42', 'UTC')" in counts
    assert "given_at > toDateTime('2026-11-26 02:17:42', 'UTC')" in counts
    assert "respond_by < toDateTime('2026-11-26 03:17:42', 'UTC')" in counts
    # The log is only read from a day before the hour (partition pruning).
    assert "received_at >= toDateTime('2026-11-25 02:17:42', 'UTC')" in counts
    recent = recent_decisions_sql(now, 5)
    assert "decided_at >= toDateTime('2026-11-26 03:17:42', 'UTC')" in recent
    assert "received_at >= toDateTime('2026-11-25 03:17:42', 'UTC')" in recent
    assert "LIMIT 1 BY input_id" in recent
    handled = recently_handled_sql(now, 5)
    assert "given_at >= toDateTime('2026-11-26 03:17:42', 'UTC')" in handled
    assert "LIMIT 1 BY feedback_id" in handled


def test_review_queue_waits_for_a_verdict_and_a_later_automatic_decision() -> None:
    sql = " ".join(review_queue_sql(SINCE, 10).split())
    assert "FROM review_items FINAL" in sql
    assert "input_id NOT IN ( SELECT input_id FROM dispatch_feedback_log" in sql
    assert "HAVING argMax(auto, decided_at_ms) = 1" in sql
    assert "ORDER BY respond_by, input_id" in sql


# --- migration 0003's text -----------------------------------------------------------------


def _dashboard_migration(dialect: str) -> list[str]:
    found = [m for m in discover(dialect, MIGRATIONS_DIR) if m.name == "dashboard"]  # type: ignore[arg-type]
    assert len(found) == 1 and found[0].version == 3
    return found[0].statements()


def test_one_file_serves_both_engines() -> None:
    """No variant for 18.16: its ADD COLUMNs (no IF NOT EXISTS there) are the plain form the
    runner skips when the column exists."""
    modern, legacy = _dashboard_migration("modern"), _dashboard_migration("legacy")
    assert modern == legacy
    alters = [s for s in modern if s.startswith("ALTER TABLE")]
    assert len(alters) == 9 and all(added_column(s) is not None for s in alters)


def test_every_statement_can_run_again() -> None:
    rerunnable = re.compile(
        r"^(CREATE (TABLE|VIEW|MATERIALIZED VIEW) IF NOT EXISTS \w+"
        r"|DROP TABLE IF EXISTS \w+$"
        # Skipped by the runner when the column is there (see test_migrations_unit).
        r"|ALTER TABLE \w+ ADD COLUMN \w+ "
        # Backfills go only where repeats collapse: distinct states, replacing engine.
        r"|INSERT INTO (dashboard_reports_hourly|dashboard_places_hourly"
        r"|dashboard_feedback_hourly|review_items)\n)"
    )
    for statement in _dashboard_migration("modern"):
        assert rerunnable.match(statement), statement


def test_each_backfill_is_its_materialized_view_query() -> None:
    statements = _dashboard_migration("modern")
    views = {}
    for s in statements:
        m = re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\n(.*)$", s, re.S)
        if m:
            views[m.group(2)] = m.group(3)
    backfills = {}
    for s in statements:
        m = re.match(r"INSERT INTO (\w+)\n(.*)$", s, re.S)
        if m:
            backfills[m.group(1)] = m.group(2)
    assert set(views) == {
        "dashboard_reports_hourly",
        "dashboard_places_hourly",
        "dashboard_feedback_hourly",
        "review_items",
    }
    assert backfills == views


def test_views_are_recreated_after_their_sources_dropped() -> None:
    statements = _dashboard_migration("modern")
    dropped = [s.split()[-1] for s in statements if s.startswith("DROP TABLE IF EXISTS")]
    assert dropped == [
        "dispatch_quality",
        "dispatch_outcomes",
        "dispatch_decisions",
        "dispatch_feedback",
    ]
    created = [
        re.match(r"CREATE VIEW IF NOT EXISTS (\w+)", s).group(1)  # type: ignore[union-attr]
        for s in statements
        if s.startswith("CREATE VIEW")
    ]
    assert created[:4] == [
        "dispatch_decisions",
        "dispatch_feedback",
        "dispatch_outcomes",
        "dispatch_quality",
    ]
    assert statements.index(next(s for s in statements if s.startswith("DROP"))) > max(
        i for i, s in enumerate(statements) if s.startswith("ALTER")
    )
