"""ClickHouse access: the embedded chDB engine or a server over the native protocol.

Both speak the same small interface (``command``, ``query``, ``insert``), so the sink,
the migrations and the query tools do not care which one they have.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import orjson

from streams.settings import Settings

Dialect = Literal["modern", "legacy"]
# Which kind of ClickHouse: in this process (chDB) or a server. Migrations may differ by
# engine where the work is better done elsewhere (migration 0007).
Engine = Literal["chdb", "server"]


class WarehouseError(RuntimeError):
    """A ClickHouse statement failed; the message names the statement's start."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    # Rows were left out by the row limit of a people's query (streams.query).
    truncated: bool = False

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0]


class Warehouse(Protocol):
    dialect: Dialect
    engine: Engine
    database: str

    def command(self, sql: str) -> None: ...
    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult: ...
    def insert(self, table: str, rows: list[dict[str, Any]]) -> None: ...
    def server_version(self) -> str: ...
    def close(self) -> None: ...


def _setting_literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def dialect_for(version: str) -> Dialect:
    """Servers before 20.x (Debian's 18.16) lack table-level dedup windows and more."""
    major = int(version.split(".", 1)[0])
    return "legacy" if major < 20 else "modern"


def _clickhouse_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to ClickHouse")


def json_each_row(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(
        orjson.dumps(r, default=_clickhouse_value, option=orjson.OPT_PASSTHROUGH_DATETIME)
        for r in rows
    )


def _short(sql: str) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= 160 else flat[:157] + "..."


class ChdbWarehouse:
    """The embedded engine. chDB allows one data path per process, so one of these each."""

    _open_path: Path | None = None
    _open_lock = threading.Lock()

    def __init__(self, path: Path, database: str) -> None:
        from chdb import session  # imported here: the server path must not need it

        path = path.resolve()
        with ChdbWarehouse._open_lock:
            if ChdbWarehouse._open_path not in (None, path):
                raise WarehouseError(
                    f"chDB is already open at {ChdbWarehouse._open_path} in this process; "
                    f"it cannot also open {path}"
                )
            path.mkdir(parents=True, exist_ok=True)
            self._session = session.Session(str(path))
            ChdbWarehouse._open_path = path
        # chDB sessions are not safe to share between threads: one statement at a time.
        self._lock = threading.Lock()
        self.path = path
        self.database = database
        self.dialect: Dialect = "modern"
        self.engine: Engine = "chdb"
        _check_identifier(database)
        self._run(f"CREATE DATABASE IF NOT EXISTS {database}")
        # The session remembers USE and SET: unqualified names resolve to the database, and
        # 64-bit integers come back as JSON numbers (not strings) in every query.
        self._run(f"USE {database}")
        self._run("SET output_format_json_quote_64bit_integers = 0")
        # Our DateTimes are UTC: read and written as UTC whatever the machine's zone is.
        self._run("SET session_timezone = 'UTC'")

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        from chdb import ChdbError

        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except ChdbError as exc:
                raise WarehouseError(f"{exc} (in: {_short(sql)})") from exc

    def command(self, sql: str) -> None:
        self._run(sql)

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult:
        statement = sql.rstrip().rstrip(";")
        if settings:
            # Per-query settings as a SETTINGS clause: the session is shared with the sink.
            statement += " SETTINGS " + ", ".join(
                f"{k} = {_setting_literal(v)}" for k, v in settings.items()
            )
        res = self._run(statement, "JSONCompact")
        raw = res.bytes()
        if not raw:
            return QueryResult([], [], [])
        doc = orjson.loads(raw)
        return QueryResult(
            [m["name"] for m in doc["meta"]],
            [m["type"] for m in doc["meta"]],
            [tuple(r) for r in doc["data"]],
        )

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        _check_identifier(table)
        payload = json_each_row(rows).decode("utf-8")
        self._run(f"INSERT INTO {table} FORMAT JSONEachRow\n{payload}")

    def server_version(self) -> str:
        return str(self.query("SELECT version()").scalar())

    def close(self) -> None:
        with ChdbWarehouse._open_lock, self._lock:
            self._session.close()
            ChdbWarehouse._open_path = None


def open_analyst_warehouse(settings: Settings) -> Warehouse | None:
    """The read-only analyst's connection to a server, when one is configured."""
    if not (settings.clickhouse_url and settings.clickhouse_analyst_user):
        return None
    password = settings.clickhouse_analyst_password
    return ServerWarehouse(
        settings.clickhouse_url,
        settings.clickhouse_database,
        password.get_secret_value() if password else "",
        user=settings.clickhouse_analyst_user,
        create_database=False,
    )


class ServerWarehouse:
    """A ClickHouse server over the native protocol (clickhouse-driver).

    clickhouse-driver's ``Client`` is not thread-safe: one client per thread.
    """

    def __init__(
        self,
        url: str,
        database: str,
        password: str | None = None,
        *,
        user: str | None = None,
        create_database: bool = True,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("clickhouse", "clickhouses"):
            raise ValueError(
                f"CITYSTREAM_CLICKHOUSE_URL must look like clickhouse://user@host:9000, got {url!r}"
            )
        _check_identifier(database)
        self.database = database
        self.engine: Engine = "server"
        # A password in the settings wins over one written into the URL.
        self._connect = {
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 9000,
            "user": user or parsed.username or "default",
            "password": password if password is not None else (parsed.password or ""),
            "secure": parsed.scheme == "clickhouses",
        }
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        # The database must exist before a client can make it its default (a read-only
        # user cannot create it, and need not: the pipeline's user has).
        if create_database:
            bootstrap = self._new_client("default")
            try:
                bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
            finally:
                bootstrap.disconnect()
        self.dialect = dialect_for(self.server_version())

    def _new_client(self, database: str) -> Any:
        from clickhouse_driver import Client

        return Client(database=database, **self._connect)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client(self.database)
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _execute(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        from clickhouse_driver.errors import Error as DriverError

        try:
            return self._client().execute(sql, params, **kwargs)
        except DriverError as exc:
            raise WarehouseError(f"{exc} (in: {_short(sql)})") from exc

    def command(self, sql: str) -> None:
        self._execute(sql)

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult:
        rows, meta = self._execute(
            sql.rstrip().rstrip(";"), with_column_types=True, settings=dict(settings or {})
        )
        return QueryResult([m[0] for m in meta], [m[1] for m in meta], [tuple(r) for r in rows])

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        _check_identifier(table)
        columns = list(rows[0])
        values = [tuple(_aware(r[c]) for c in columns) for r in rows]
        self._execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", values)

    def server_version(self) -> str:
        return str(self.query("SELECT version()").scalar())

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients:
                client.disconnect()
            self._clients.clear()


def _aware(value: Any) -> Any:
    # Rows carry naive UTC datetimes; the driver reads naive values in the server's zone.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _check_identifier(name: str) -> None:
    if not name.replace("_", "").isalnum() or not name.isascii() or name[0].isdigit():
        raise ValueError(f"{name!r} is not a plain ClickHouse identifier")


def open_warehouse(settings: Settings) -> Warehouse:
    if settings.clickhouse_url:
        password = (
            settings.clickhouse_password.get_secret_value()
            if settings.clickhouse_password
            else None
        )
        return ServerWarehouse(settings.clickhouse_url, settings.clickhouse_database, password)
    return ChdbWarehouse(settings.chdb_data_path, settings.clickhouse_database)
