"""The dashboards' aggregates without materialized views (the embedded engine, 0007).

Migration 0003 keeps ``dashboard_*_hourly`` and ``review_items`` by materialized views
over the decision and feedback logs. On chDB those views run inside the worker's insert,
so migration 0007 drops them there and the worker runs the very same SELECTs itself,
every few seconds (``processors.dashboard_refresh``). The SELECTs are read from 0003's
view definitions, never written out a second time; this module only changes what they
read from:

- the log's rows inserted since the last refresh: the parts holding insert blocks above
  the watermark (the highest block already aggregated; block numbers grow with each
  insert), and in them the rows whose ``_block_number`` is above it (0007 makes the logs
  keep each row's block number through merges); no full scan of the log;
- a staging copy of the rows the sink inserted that are no longer in the log: a
  ReplacingMergeTree merge may have collapsed a report's earlier decision into a later
  one before the refresh came, where the view had seen both. The refresher knows what
  the sink inserted, finds those rows missing by their key, and stages just them.

Taking a row twice is harmless, as for the views and 0003's backfill: the counts are
distinct-id (uniqExact) states, and review_items is a ReplacingMergeTree. Everything here
is pure (SQL text in, SQL text out).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from schemas.migrations import MIGRATIONS_DIR, Migration, discover

# The migration whose materialized views are replaced, and what they read.
FEEDS_MIGRATION = 3
DECISIONS_LOG = "dispatch_decisions_log"
FEEDBACK_LOG = "dispatch_feedback_log"
LOGS = (DECISIONS_LOG, FEEDBACK_LOG)
# Where the inserted rows a merge collapsed before the refresh are put for it (Memory:
# rarely more than a few rows, never kept).
STAGING = {DECISIONS_LOG: "dashboard_pending_decisions", FEEDBACK_LOG: "dashboard_pending_feedback"}
STATE_TABLE = "dashboard_refresh_state"
# What identifies a row of each log (its ORDER BY, and the version that decides which of
# two rows a merge keeps).
KEYS = {DECISIONS_LOG: ("input_id", "decided_at_ms"), FEEDBACK_LOG: ("input_id", "feedback_id")}
BLOCK_NUMBERS = "enable_block_number_column = 1"

_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\s+(SELECT\b.*)$", re.DOTALL
)
_FROM = re.compile(r"\bFROM\s+(\w+)\b")


@dataclass(frozen=True, slots=True)
class Feed:
    """One materialized view of 0003: ``INSERT INTO target`` its ``select`` over ``source``."""

    view: str
    target: str
    source: str
    select: str

    def select_from(self, relation: str) -> str:
        """The view's SELECT reading ``relation`` (a table, or a parenthesised subquery)
        where it read its source table."""
        replaced, count = re.subn(
            rf"\bFROM\s+{self.source}\b", lambda _m: f"FROM {relation}", self.select
        )
        if count != 1:  # parse_feeds checked there is exactly one
            raise ValueError(f"{self.view}: expected one FROM {self.source}")
        return replaced

    def insert_from(self, relation: str) -> str:
        return f"INSERT INTO {self.target}\n{self.select_from(relation)}"


def parse_feeds(migration: Migration) -> tuple[Feed, ...]:
    """The materialized views a migration creates, in its order."""
    feeds = []
    for statement in migration.statements():
        match = _VIEW.match(statement)
        if not match:
            continue
        view, target, select = match.groups()
        sources = _FROM.findall(select)
        if len(sources) != 1:
            raise ValueError(f"{view}: a view read from one table is expected, got {sources}")
        feeds.append(Feed(view, target, sources[0], select.strip()))
    return tuple(feeds)


@cache
def dashboard_feeds() -> tuple[Feed, ...]:
    """0003's views (the file is checksummed by the runner: it cannot drift)."""
    migration = next(
        m for m in discover("modern", MIGRATIONS_DIR, "chdb") if m.version == FEEDS_MIGRATION
    )
    feeds = parse_feeds(migration)
    unknown = {f.source for f in feeds} - set(LOGS)
    if unknown:
        raise ValueError(f"0003's views read tables the refresher does not stage: {unknown}")
    return feeds


def staging_statements(logs: Iterable[str] = LOGS) -> list[str]:
    """(Re)create the staging tables with each log's current structure: run at start-up,
    so a later migration's new column is there too."""
    out = []
    for log in logs:
        out.append(f"DROP TABLE IF EXISTS {STAGING[log]}")
        out.append(f"CREATE TABLE {STAGING[log]} AS {log} ENGINE = Memory")
    return out


def refresh_statements(feeds: Sequence[Feed], logs: Collection[str]) -> list[str]:
    """The views' inserts over the staged rows of ``logs`` (those that got rows)."""
    return [f.insert_from(STAGING[f.source]) for f in feeds if f.source in logs]


def new_rows(log: str, above: int, by_block: bool) -> str:
    """The log's rows in blocks above the mark, as a subquery. Parts are chosen by the
    highest block in their name (``partition_min_max_level[_mutation]``; our partition
    ids have no ``_``), which ClickHouse evaluates on the part list before reading: other
    parts are not read at all, and a part merged meanwhile is still found. With
    ``by_block`` only the rows of those blocks (a merged part also holds older rows:
    harmless to take again, but not needed)."""
    where = f"toUInt64(splitByChar('_', _part)[3]) > {int(above)}"
    if by_block:
        where += f" AND _block_number > {int(above)}"
    return f"(SELECT * FROM {log} WHERE {where})"


def new_rows_statements(
    feeds: Sequence[Feed], logs: Collection[str], marks: Mapping[str, int],
    by_block: Collection[str],
) -> list[str]:
    """The views' inserts over the rows of ``logs`` above each one's mark."""
    return [
        f.insert_from(new_rows(f.source, marks.get(f.source, 0), f.source in by_block))
        for f in feeds
        if f.source in logs
    ]


def keys_sql(log: str, above: int, by_block: bool) -> str:
    """The keys of the log's rows above the mark (what a merge has not collapsed)."""
    return f"SELECT {', '.join(KEYS[log])} FROM {new_rows(log, above, by_block)}"


def row_key(log: str, row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(c)) for c in KEYS[log])


def missing_rows(
    log: str, inserted: Iterable[Mapping[str, Any]], present: Iterable[Sequence[Any]]
) -> list[Mapping[str, Any]]:
    """The inserted rows whose key the log no longer has above the mark: collapsed by a
    merge into another version before they were aggregated."""
    kept = {tuple(str(v) for v in key) for key in present}
    return [row for row in inserted if row_key(log, row) not in kept]


def tables_sql(logs: Iterable[str] = LOGS) -> str:
    listed = ", ".join(f"'{log}'" for log in logs)
    return (
        "SELECT name, engine_full FROM system.tables "
        f"WHERE database = currentDatabase() AND name IN ({listed})"
    )


def block_numbered(rows: Iterable[Sequence[Any]]) -> set[str]:
    """From rows of ``tables_sql``: the logs that keep each row's block number (0007)."""
    return {str(name) for name, engine in rows if BLOCK_NUMBERS in str(engine)}


def parts_sql(logs: Iterable[str] = LOGS) -> str:
    listed = ", ".join(f"'{log}'" for log in logs)
    return (
        "SELECT table, name, max_block_number FROM system.parts "
        f"WHERE database = currentDatabase() AND active AND table IN ({listed})"
    )


WATERMARKS_SQL = f"SELECT source, max(block) FROM {STATE_TABLE} GROUP BY source"


@dataclass
class Watermarks:
    """For each log, the highest insert block whose rows are in the aggregates.

    Kept in ``dashboard_refresh_state`` (a ReplacingMergeTree on the block: the highest
    wins). It only grows: a table truncated and refilled would need its row deleted.
    """

    blocks: dict[str, int]

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Watermarks:
        return cls({str(source): int(block) for source, block in rows})

    def get(self, log: str) -> int:
        return self.blocks.get(log, 0)

    def parts_above(self, parts: Iterable[Sequence[Any]]) -> dict[str, list[str]]:
        """From rows of ``parts_sql``: each log's parts with a block above its mark (new
        inserts, and merged parts that took one in: read whole, repeats are harmless)."""
        out: dict[str, list[str]] = {}
        for table, name, max_block in parts:
            if int(max_block) > self.get(str(table)):
                out.setdefault(str(table), []).append(str(name))
        return {t: sorted(names) for t, names in out.items()}

    def advance(self, parts: Iterable[Sequence[Any]]) -> dict[str, int]:
        """Raise each log's mark to its highest block in ``parts`` (every row the parts
        hold is aggregated); return the marks that moved, to be stored."""
        highest: dict[str, int] = {}
        for table, _name, max_block in parts:
            highest[str(table)] = max(highest.get(str(table), 0), int(max_block))
        moved = {t: b for t, b in highest.items() if b > self.get(t)}
        self.blocks.update(moved)
        return moved

    @staticmethod
    def state_rows(moved: Mapping[str, int]) -> list[dict[str, Any]]:
        return [{"source": t, "block": b} for t, b in sorted(moved.items())]
