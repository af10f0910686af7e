"""``citystream similar``: the live similar-case search over a file of past cases.

The past cases are embedded by the live case embedder (in-process, or ``--via triton``)
and stored in the live tables, made by the live migrations, in a fresh ClickHouse
database: chDB in a temporary directory, or a uniquely named database on the server
``--clickhouse`` names (dropped at the end unless ``--keep-database``). Each query is then
the board's own search (``processors.similar.similar_cases_sql``) run there. Both files
go through the ``streams.batch`` frame (``streams.batch_cli``): a chunk at a time, rejects
with line number and reason, a summary line each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from processors.similar import EMBEDDINGS_LOG, MAX_K
from streams.batch import InputLine, Rejected, Summary, run_batch
from streams.batch_cli import (
    add_batch_command,
    model_settings,
    run_batch_command,
    run_driver_command,
)
from streams.clickhouse import Warehouse, WarehouseError
from streams.settings import Settings

if TYPE_CHECKING:
    from models.embedding.serving import CaseEmbedder

COMMAND = "similar"
DEFAULT_K = 5
# The --help example: what the README's worked example gives (models/eval/similar_*.jsonl,
# the embedder `make train` builds).
EXAMPLE_CASE = {
    "id": "p-106", "text": "市南区香港中路人行道边的路灯杆歪了，灯也不亮，担心倒下来砸到人。",
    "time": "2026-02-11T21:00:00+08:00", "code": "E02", "district": "市南区",
    "resolution": "市南区城市管理局", "hours_to_close": 5.5,
}
EXAMPLE_QUERY = {
    "id": "q-2", "text": "香港中路的路灯晚上不亮，过马路看不见", "code": "E02",
    "district": "市南区", "since": "2026-02-01T00:00:00+08:00",
}
EXAMPLE_ANSWER = {"id": "q-2", "similar": [
    {"id": "p-106", "score": 0.9423, "resolution": "市南区城市管理局", "hours_to_close": 5.5},
    {"id": "p-110", "score": 0.6927},
]}
NOTE = f"""\
The filters code, district and since (inclusive) are optional. Answers: best first
(equal scores by id), at most --k; resolution and hours_to_close when the past case had
them. Past cases (--cases), one per line; code, district, resolution and hours_to_close
are optional:
     {json.dumps(EXAMPLE_CASE, ensure_ascii=False)}
Texts are normalised and masked as ingest stores them, embedded by the live case
embedder and searched by the board's own query. Times: ISO 8601 with a UTC offset.
Rejected: a text with nothing to embed (only emoji, say), a bad code, district or time,
a repeated past-case id (the first line keeps it). Rejected past cases go to
OUT.cases.rejects.jsonl (--cases-rejects). Exit 2 when the run cannot start (no past
case loaded, no model, no ClickHouse); 1 when the models stop answering mid-run, when no
query could be answered, or with --strict on any reject (past cases' too)."""


class _Stop(Exception):
    """The run cannot go on: the message says why, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``similar`` command to the main CLI's subparsers."""
    p = add_batch_command(
        subparsers, COMMAND,
        "the most similar past cases of each text, as the board's search finds them",
        [([EXAMPLE_QUERY], [EXAMPLE_ANSWER])], NOTE, models=True,
    )
    p.add_argument("--cases", required=True,
                   help="past cases, JSON Lines (- for stdin when --input is a file)")
    p.add_argument("--k", type=_k, default=DEFAULT_K,
                   help=f"past cases per query, 1 to {MAX_K} (default {DEFAULT_K})")
    p.add_argument("--cases-rejects", default=None,
                   help="past cases that could not be loaded, with line number and reason "
                   "(default: OUT.cases.rejects.jsonl; stderr when OUT is stdout)")
    p.add_argument("--clickhouse", metavar="URL", default=None,
                   help="search on this server (clickhouse://user@host:9000) in a new "
                   "database of its own, instead of chDB in a temporary directory; the "
                   "password: CITYSTREAM_CLICKHOUSE_PASSWORD, else the URL's")
    p.add_argument("--keep-database", action="store_true",
                   help="with --clickhouse: keep the database (its name is printed)")


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_K}")
    return k


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    from processors.similar_batch import QUERY_FIELDS

    try:
        _check_inputs(args)
        with contextlib.ExitStack() as stack:
            embedder = stack.enter_context(_embedder(model_settings(args, settings)))
            warehouse = stack.enter_context(_scratch_warehouse(args, settings))
            loaded = _load_cases(args, warehouse, embedder, settings)
            code = run_batch_command(
                args, COMMAND,
                lambda lines: _search(lines, warehouse, embedder, args.k, settings.max_text_chars),
                QUERY_FIELDS,
            )
            return code or (1 if args.strict and loaded.rejected else 0)
    except _Stop as stop:
        print(f"citystream {COMMAND}: {stop}", file=sys.stderr)
        return stop.code


def _check_inputs(args: argparse.Namespace) -> None:
    """Unreadable inputs stop the run before the models and the database are set up."""
    if args.cases == "-" and args.input == "-":
        raise _Stop("--cases and --input cannot both be stdin")
    for path in (args.cases, args.input):
        if path == "-":
            continue
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise _Stop(f"cannot read {path}: {exc.strerror}") from exc


@contextlib.contextmanager
def _embedder(settings: Settings) -> Iterator[CaseEmbedder]:
    """The live case embedder on the route the settings name. It failing at the start
    stops the run before anything is read; failing mid-run (``--via triton`` has no
    fallback) stops it with what was written so far, as every batch command."""
    from models.embedding.serving import build_case_embedder
    from models.inference import BackendUnavailable, InferenceError, ModelMismatch
    from processors.dispatch import ModelsUnavailable

    errors = (BackendUnavailable, InferenceError, ModelMismatch, ModelsUnavailable)
    try:
        embedder = build_case_embedder(settings)
    except errors as exc:
        raise _Stop(f"no case embedder: {exc}") from exc
    try:
        yield embedder
    except errors as exc:
        raise _Stop(f"stopped, the models did not answer: {exc}", code=1) from exc
    finally:
        embedder.close()


@contextlib.contextmanager
def _scratch_warehouse(args: argparse.Namespace, settings: Settings) -> Iterator[Warehouse]:
    """A fresh database with the live tables (the migrations): chDB in a temporary
    directory, or a new uniquely named database on ``--clickhouse``, dropped at the end
    unless ``--keep-database``. A ClickHouse failing, at the start or mid-run, stops the
    run."""
    from clickhouse_driver.errors import Error as DriverError

    from schemas.migrations import migrate
    from streams.clickhouse import ChdbWarehouse, ServerWarehouse

    try:
        with contextlib.ExitStack() as stack:
            if args.clickhouse is None:
                workdir = Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="citystream-similar-")))
                warehouse: Warehouse = ChdbWarehouse(workdir / "chdb", "similar")
                stack.callback(warehouse.close)
            else:
                database = f"similar_{uuid.uuid4().hex[:12]}"
                password = settings.clickhouse_password
                try:
                    warehouse = ServerWarehouse(
                        args.clickhouse, database,
                        password.get_secret_value() if password else None)
                except ValueError as exc:  # the URL's form
                    raise _Stop(f"--clickhouse: {exc}") from exc
                stack.callback(warehouse.close)  # last: after the drop
                if args.keep_database:
                    print(f"citystream {COMMAND}: past cases in database {database}",
                          file=sys.stderr)
                else:
                    stack.callback(_drop, warehouse, database)
            migrate(warehouse)
            yield warehouse
    except (WarehouseError, DriverError) as exc:  # the driver's own include network errors
        raise _Stop(f"ClickHouse: {exc}") from exc


def _drop(warehouse: Warehouse, database: str) -> None:
    with contextlib.suppress(WarehouseError):  # the run's own answer matters more
        warehouse.command(f"DROP DATABASE IF EXISTS {database}")


def _load_cases(
    args: argparse.Namespace, warehouse: Warehouse, embedder: CaseEmbedder, settings: Settings
) -> Summary:
    """The past cases into the warehouse through the batch frame, a sink batch at a time
    (a server takes few large inserts better than many small ones); their rejects to
    their own file, and their summary line. ``_Stop`` when none could be loaded."""
    from processors.similar_batch import CASE_FIELDS

    loaded: list[Summary] = []

    def driver(source: IO[bytes], _stdout: IO[str], rejects: IO[str]) -> Summary:
        # Past cases have no output lines: their rows in the warehouse are the output.
        with open(os.devnull, "w", encoding="utf-8") as discard:
            summary = run_batch(
                source, discard, rejects,
                lambda lines: _store(lines, warehouse, embedder, settings.max_text_chars),
                CASE_FIELDS, chunk=settings.sink_batch_size,
            )
        loaded.append(summary)
        return summary

    rejects = args.cases_rejects or (
        None if args.output == "-" else f"{args.output}.cases.rejects.jsonl")
    # output "-" keeps the frame from opening an output file: the driver writes none.
    cases = argparse.Namespace(input=args.cases, output="-", rejects=rejects,
                               strict=args.strict)
    run_driver_command(cases, f"{COMMAND} (past cases)", driver)
    if not loaded:
        raise _Stop("stopped while loading the past cases", code=1)
    if not loaded[0].processed:
        raise _Stop(f"no past case could be loaded from {args.cases}")
    return loaded[0]


def _store(
    lines: Sequence[InputLine], warehouse: Warehouse, embedder: CaseEmbedder, max_chars: int
) -> list[dict[str, Any] | Rejected]:
    from processors.similar_batch import (
        FEEDBACK_LOG,
        case_row,
        closing_row,
        embed_parsed,
        parse_case,
        refuse_repeats,
        stored_ids_sql,
    )

    def stored(ids: list[str]) -> set[str]:
        return {str(r[0]) for r in warehouse.query(stored_ids_sql(ids)).rows}

    parsed = refuse_repeats([parse_case(line, max_chars) for line in lines], stored)
    out: list[dict[str, Any] | Rejected] = []
    rows, closings = [], []
    for item in embed_parsed(parsed, embedder.embed):
        if isinstance(item, Rejected):
            out.append(item)
            continue
        case, vector = item
        rows.append(case_row(case, vector, embedder.version))
        closing = closing_row(case)
        if closing is not None:
            closings.append(closing)
        out.append({})
    warehouse.insert(EMBEDDINGS_LOG, rows)
    warehouse.insert(FEEDBACK_LOG, closings)
    return out


def _search(
    lines: Sequence[InputLine],
    warehouse: Warehouse,
    embedder: CaseEmbedder,
    k: int,
    max_chars: int,
) -> list[dict[str, Any] | Rejected]:
    from processors.similar import past_cases_from_rows, similar_cases_sql
    from processors.similar_batch import embed_parsed, parse_query, result_line

    out: list[dict[str, Any] | Rejected] = []
    for item in embed_parsed([parse_query(line, max_chars) for line in lines], embedder.embed):
        if isinstance(item, Rejected):
            out.append(item)
            continue
        query, vector = item
        sql = similar_cases_sql(vector, query.filters, k, dims=embedder.dims)
        out.append(result_line(query.id, past_cases_from_rows(warehouse.query(sql).rows)))
    return out
