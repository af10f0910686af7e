"""Read-only SQL for people: one SELECT-like statement, with a row limit."""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from streams.clickhouse import QueryResult
from streams.settings import Settings

ResultFormat = Literal["table", "csv", "json"]
FORMATS: tuple[ResultFormat, ...] = ("table", "csv", "json")
CONTENT_TYPES: dict[str, str] = {
    "table": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson; charset=utf-8",
}

_ALLOWED_START = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS)\b", re.IGNORECASE)
_LITERALS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")
_WRITE_WORDS = re.compile(
    # SYSTEM the statement, not the database (system.numbers, system.tables are reads).
    r"\b(INSERT|ALTER|DROP|CREATE|TRUNCATE|RENAME|ATTACH|DETACH|OPTIMIZE|SYSTEM(?!\s*\.)|KILL"
    r"|GRANT|SET)\b",
    re.IGNORECASE,
)
# The limits and the output format are ours to set, not the query's.
_OWN_CLAUSES = re.compile(r"\b(SETTINGS|FORMAT|INTO\s+OUTFILE)\b", re.IGNORECASE)
_SELECTS = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)


class QueryRefused(ValueError):
    pass


def read_only(sql: str, max_chars: int = 20_000) -> str:
    """Return the statement if it is a single read; refuse anything that could write.

    A ClickHouse server enforces this for real with a readonly user; this check is what
    the embedded mode has, so it errs on the side of refusing.
    """
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise QueryRefused("empty query")
    if len(statement) > max_chars:
        raise QueryRefused(f"query is longer than {max_chars} characters")
    bare = _LITERALS.sub("''", statement)
    if ";" in bare:
        raise QueryRefused("one statement at a time")
    if not _ALLOWED_START.match(bare):
        raise QueryRefused("only SELECT, WITH, SHOW, DESCRIBE and EXISTS are allowed")
    word = _WRITE_WORDS.search(bare)
    if word:
        raise QueryRefused(f"{word.group(1).upper()} is not allowed in a read-only query")
    own = _OWN_CLAUSES.search(bare)
    if own:
        raise QueryRefused(
            f"{own.group(1).upper()} is set by citystream (row and time limits, output format)"
        )
    return statement


def query_limits(statement: str, max_rows: int, max_seconds: float) -> dict[str, object]:
    """ClickHouse settings that bound a read: rows returned and time spent. Applied per
    query (the embedded engine's session is shared with the sink); a server adds its own
    user profile and quotas on top (infra/production/clickhouse)."""
    if not _SELECTS.match(_LITERALS.sub("''", statement)):
        return {}  # SHOW / DESCRIBE / EXISTS: small by nature
    return {
        # One more than shown, so the caller can tell the result was cut.
        "max_result_rows": max_rows + 1,
        "result_overflow_mode": "break",
        "max_execution_time": max_seconds,
    }


def cut(result: QueryResult, max_rows: int) -> tuple[QueryResult, bool]:
    """At most ``max_rows`` rows (``break`` mode returns whole blocks), and whether rows
    were left out."""
    if len(result.rows) <= max_rows:
        return result, False
    return QueryResult(result.columns, result.types, result.rows[:max_rows], True), True


class WorkerUnavailable(RuntimeError):
    """No worker answers on the given address."""


def api_token(settings: Settings) -> str | None:
    """The token `citystream query` shows a worker: CITYSTREAM_API_TOKEN, else the local
    stack's analyst token (written by `citystream users ensure-local`)."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    path = settings.var_dir / "api-token"
    return path.read_text("utf-8").strip() if path.exists() else None


def query_worker(
    host: str, port: int, sql: str, token: str | None = None, timeout_s: float = 60
) -> QueryResult:
    """Run a read-only query on a running worker's ``/query`` (the embedded mode's way in:
    chDB allows one process per data path, and the worker holds it). The worker asks for
    an analyst's API token."""
    request = urllib.request.Request(
        f"http://{host}:{port}/query",
        data=sql.encode("utf-8"),
        headers={"Content-Type": "text/plain; charset=utf-8"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise QueryRefused(json.load(exc).get("error", f"HTTP {exc.code}")) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkerUnavailable(f"no worker answers at {host}:{port} ({reason})") from exc
    return QueryResult(
        doc["columns"], doc["types"], [tuple(r) for r in doc["rows"]], doc.get("truncated", False)
    )


@dataclass(frozen=True, slots=True)
class WorkerQueries:
    """Reads through a running worker's ``/query`` (the embedded mode: the worker holds
    chDB's data path, so no other process can open it). Needs an analyst's token; the
    worker applies the row and time limits itself."""

    host: str
    port: int
    token: str | None = None
    timeout_s: float = 120

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult:
        return query_worker(self.host, self.port, sql, self.token, self.timeout_s)


@contextmanager
def analyst_reads(settings: Settings) -> Iterator[Any]:
    """Where an analyst's reads go from a command line: on a server, the read-only analyst
    user's connection (else the pipeline's); embedded, the running worker's /query."""
    from streams.clickhouse import open_analyst_warehouse, open_warehouse

    if not settings.clickhouse_url:
        yield WorkerQueries(settings.web_host, settings.web_port, api_token(settings))
        return
    warehouse = open_analyst_warehouse(settings) or open_warehouse(settings)
    try:
        yield warehouse
    finally:
        warehouse.close()


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """A result as people read it: an aligned table, CSV with a header, or JSON Lines (one
    object per row). The same text from ``citystream query`` and ``/query?format=``."""
    if fmt == "json":
        return "".join(
            json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, default=str)
            + "\n"
            for row in rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    cells = [list(columns)] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
