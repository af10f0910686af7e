"""``citystream merge`` over files: the live case stage's merging, for reports in any order.

A stream sees reports in time order; a file may not. So the run spills to a temporary
SQLite file and reads back sorted, which keeps memory flat on any input size:

1. each chunk of lines is decided as the live agent decides it (ingest, then the
   dispatcher: code, district, street, place) and stored as the merge report the live case
   stage builds from that decision (``report_from_decision``); rejects are written as
   they come, in line order;
2. the reports are read back by time (SQLite sorts on disk) through the live index's
   steps (``processors.merge_batch.assign_in_order``); case merges are stored too;
3. the output is read back in line order, each case id followed through later merges.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from processors.merge import MergePolicy, MergeReport, report_from_decision
from processors.merge_batch import assign_in_order, time_order
from schemas.records import DispatchDecision
from streams.batch import CHUNK, InputLine, Rejected, Summary, run_batch

MERGE_FIELDS = ("id", "text", "time")
# Decided reports, in line order, as the command's process hands them over.
Decide = Callable[[Sequence[InputLine]], Sequence[DispatchDecision | Rejected]]
_WRITE_BATCH = 2000
_FOLLOW_CACHE = 65_536  # resolved case ids kept in memory (bounded)


def _schema(db: sqlite3.Connection) -> None:
    # Nothing here needs to survive a crash: the file is scratch, deleted at the end.
    db.executescript("""
        PRAGMA journal_mode = OFF;
        PRAGMA synchronous = OFF;
        PRAGMA temp_store = FILE;
        PRAGMA cache_size = -32000;
        CREATE TABLE reports (line INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
                              sort_at REAL NOT NULL, report TEXT NOT NULL);
        CREATE TABLE cases (line INTEGER PRIMARY KEY, case_id TEXT NOT NULL);
        CREATE TABLE merged (gone TEXT PRIMARY KEY, into_id TEXT NOT NULL) WITHOUT ROWID;
    """)


def _dump(report: MergeReport) -> str:
    fields = dataclasses.asdict(report)
    fields["at"] = report.at.isoformat() if report.at else None
    return json.dumps(fields, ensure_ascii=False)


def _load(raw: str) -> MergeReport:
    fields: dict[str, Any] = json.loads(raw)
    at = fields.pop("at")
    return MergeReport(at=datetime.fromisoformat(at) if at else None, **fields)


def _store(db: sqlite3.Connection, line: InputLine, decision: DispatchDecision) -> Rejected | None:
    report = dataclasses.replace(report_from_decision(decision), report_id=line.record["id"])
    try:
        db.execute("INSERT INTO reports VALUES (?, ?, ?, ?)",
                   (line.number, report.report_id, time_order(report)[0], _dump(report)))
    except sqlite3.IntegrityError:
        # Case ids are report ids: two reports with one id would make one answer wrong.
        (first,) = db.execute("SELECT line FROM reports WHERE id = ?",
                              (report.report_id,)).fetchone()
        return Rejected(f"duplicate id {report.report_id!r} (first on line {first})")
    return None


def _read_back(db: sqlite3.Connection) -> Iterator[tuple[int, MergeReport]]:
    rows = db.execute("SELECT line, report FROM reports ORDER BY sort_at, id, line")
    for line, raw in rows:
        yield line, _load(raw)


def _assign(db: sqlite3.Connection, policy: MergePolicy) -> None:
    db.execute("CREATE INDEX by_time ON reports (sort_at, id, line)")
    writer = db.cursor()  # the read cursor stays open on reports meanwhile
    cases: list[tuple[int, str]] = []
    merges: list[tuple[str, str]] = []

    def flush() -> None:
        writer.executemany("INSERT INTO cases VALUES (?, ?)", cases)
        writer.executemany("INSERT OR REPLACE INTO merged VALUES (?, ?)", merges)
        cases.clear()
        merges.clear()

    for line, case_id, absorbed in assign_in_order(_read_back(db), policy):
        cases.append((line, case_id))
        merges.extend((gone, case_id) for gone in absorbed)
        if len(cases) >= _WRITE_BATCH:
            flush()
    flush()


def _write_output(db: sqlite3.Connection, sink: IO[str]) -> None:
    @lru_cache(maxsize=_FOLLOW_CACHE)
    def follow(case_id: str) -> str:
        seen = {case_id}
        while True:
            row = db.execute("SELECT into_id FROM merged WHERE gone = ?", (case_id,)).fetchone()
            if row is None or row[0] in seen:
                return case_id
            case_id = row[0]
            seen.add(case_id)

    rows = db.execute(
        "SELECT r.id, c.case_id FROM reports r JOIN cases c ON c.line = r.line ORDER BY r.line"
    )
    for report_id, case_id in rows:
        sink.write(json.dumps({"id": report_id, "case_id": follow(case_id)},
                              ensure_ascii=False) + "\n")


def run_merge(
    source: IO[bytes],
    sink: IO[str],
    rejects: IO[str],
    decide: Decide,
    policy: MergePolicy,
    *,
    progress: IO[str] | None = None,
    chunk: int = CHUNK,
    workdir: Path | None = None,
) -> Summary:
    """Case ids for every report ``decide`` accepts, in input order; rejects (with line
    number and reason) for the others. The spill file lives in ``workdir`` (default: the
    system's temporary directory) and is removed at the end."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="citystream-merge-", dir=workdir) as scratch:
        db = sqlite3.connect(Path(scratch) / "merge.sqlite", isolation_level=None)
        try:
            _schema(db)

            def store(lines: Sequence[InputLine]) -> list[dict[str, Any] | Rejected]:
                decided = decide(lines)
                return [
                    result if isinstance(result, Rejected)
                    else _store(db, line, result) or {}
                    for line, result in zip(lines, decided, strict=True)
                ]

            db.execute("BEGIN")
            summary = run_batch(source, None, rejects, store, MERGE_FIELDS,
                                progress=progress, chunk=chunk)
            db.execute("COMMIT")
            db.execute("BEGIN")
            _assign(db, policy)
            db.execute("COMMIT")
            _write_output(db, sink)
        finally:
            db.close()
    summary.seconds = time.monotonic() - started
    return summary
