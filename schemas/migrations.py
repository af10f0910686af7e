"""A small migration runner for ClickHouse: versioned, idempotent, recorded in a table.

Migrations are ``schemas/clickhouse/NNNN_name.sql``. Where old servers (Debian's
18.16, the ``legacy`` dialect) need different DDL, a ``NNNN_name.legacy.sql`` beside
it is used there instead. Where the engine matters (the embedded chDB, inside the
worker's process, against a server), ``NNNN_name.chdb.sql`` or ``NNNN_name.server.sql``
is used on that engine; an engine variant wins over a dialect variant. Every statement
must itself be idempotent (``IF NOT EXISTS``, ``DROP ... IF EXISTS``, inserts into
distinct or replacing tables), so a run that died half way can simply run again. One
exception, handled here: 18.16 has no ``ADD COLUMN IF NOT EXISTS``, so a single-column
``ALTER TABLE t ADD COLUMN c ...`` whose column already exists is skipped (on every
engine: one file serves both)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streams.clickhouse import Dialect, Engine, Warehouse

MIGRATIONS_DIR = Path(__file__).resolve().parent / "clickhouse"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_VARIANT = re.compile(r"^(\d{4}_[a-z0-9_]+)\.(\w+)\.sql$", re.ASCII)
VARIANTS = ("legacy", "modern", "chdb", "server")
# One column, no IF NOT EXISTS, nothing else in the statement (no comma: one command).
_ADD_COLUMN = re.compile(
    r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(?!IF\s)(\w+)\s[^,]*$", re.IGNORECASE | re.ASCII
)


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()[:16]

    def statements(self) -> list[str]:
        lines = [ln for ln in self.sql.splitlines() if not ln.strip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def discover(
    dialect: Dialect, directory: Path = MIGRATIONS_DIR, engine: Engine | None = None
) -> list[Migration]:
    """The migrations in order, each with the SQL for this engine and dialect: the
    engine's variant, else the dialect's, else the base file."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        variant_of = _VARIANT.match(path.name)
        if variant_of:
            # Variants are picked up through their base file; a misspelt or orphaned one
            # would silently never run.
            if variant_of.group(2) not in VARIANTS:
                raise MigrationError(f"{path.name}: unknown variant (one of {VARIANTS})")
            if not path.with_name(f"{variant_of.group(1)}.sql").exists():
                raise MigrationError(f"{path.name}: a variant without its base file")
            continue
        match = _NAME.match(path.name)
        if not match:
            continue
        candidates = [f"{path.stem}.{engine}.sql"] if engine else []
        candidates.append(f"{path.stem}.{dialect}.sql")
        chosen = next(
            (v for v in (path.with_name(c) for c in candidates) if v.exists()), path
        )
        found.append(Migration(int(match.group(1)), match.group(2), chosen.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {directory}")
    return found


_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime
)
ENGINE = MergeTree()
ORDER BY version
"""


def added_column(statement: str) -> tuple[str, str] | None:
    """(table, column) when ``statement`` adds one column without IF NOT EXISTS."""
    match = _ADD_COLUMN.match(statement.strip())
    return (match.group(1), match.group(2)) if match else None


def _already_done(warehouse: Warehouse, statement: str) -> bool:
    # A rerun after a half-applied migration finds the column there, and the ALTER would
    # fail (18.16 has no IF NOT EXISTS for it).
    added = added_column(statement)
    if added is None:
        return False
    table, column = added
    found = warehouse.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() "
        f"AND table = '{table}' AND name = '{column}'"
    )
    return int(found.scalar()) > 0


def applied(warehouse: Warehouse) -> dict[int, tuple[str, str]]:
    warehouse.command(_LEDGER)
    res = warehouse.query("SELECT version, name, checksum FROM schema_migrations")
    return {int(v): (n, c) for v, n, c in res.rows}


def migrate(warehouse: Warehouse, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply the migrations not yet recorded, in order; return those applied now."""
    done = applied(warehouse)
    ran: list[Migration] = []
    for migration in discover(warehouse.dialect, directory, warehouse.engine):
        if migration.version in done:
            name, checksum = done[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{name} was changed after it was applied "
                    f"(recorded checksum {checksum}, file {migration.checksum}); "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.statements():
            if not _already_done(warehouse, statement):
                warehouse.command(statement)
        warehouse.insert(
            "schema_migrations",
            [
                {
                    "version": migration.version,
                    "name": migration.name,
                    "checksum": migration.checksum,
                    "applied_at": datetime.now(UTC).replace(tzinfo=None),
                }
            ],
        )
        ran.append(migration)
    return ran
