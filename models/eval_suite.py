"""``make eval`` beyond dispatch: the figures issue #6 asks for, each written to
``bench-results/eval-<part>.json`` with the seeds and parameters that made it, and a
markdown summary printed (and written beside it as ``.md``).

Parts (``citystream eval --parts ...``):

- ``masking``: ``citystream mask`` over the generated set with known personal data and
  decoys (``processors.pii_testset``): recall and precision per type, decoys masked by
  mistake;
- ``merge``: duplicate merging on simulated bursts (``processors.merge_eval``): pairwise
  and B-cubed precision/recall with the simulator's truth, and of ``citystream merge``
  over the shuffled reports (the live decision and case path);
- ``similar``: similar past cases (``models.embedding.evaluate``): precision@5 and
  recall@5 of our ``case_embedder`` without and with filters; the Universal Sentence
  Encoder as well with ``--with-use`` (minutes: about 90 texts/s);
- ``report``: the time ``processors.report_run.generate_report`` takes for a day report
  over N simulated reports stored in a temporary chDB database (stored through the real
  ingest, decided by the real dispatcher, verdicts from the units' simulator). Measured,
  never asserted.

Everything is seeded; the same parameters give the same figures (the timings aside).
Where a batch command exists, the part writes its test set to ``bench-results/eval-data/``
(the command's input and a truth file), runs the command itself on it, and scores the
command's output file: ``citystream eval-check PART --truth T --output O`` recomputes the
figures from the files alone. The runners do I/O (models, chDB); the formatting below
them is pure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

PARTS = ("dispatch", "masking", "merge", "similar", "report")
# Runs one ``citystream`` command line (the CLI's ``main``); returns its exit status.
RunCommand = Callable[[Sequence[str]], int]
ISSUE6_PARTS = PARTS[1:]
DATA_DIR = "eval-data"  # under the output directory: the commands' input, truth, output


# ---- parameters -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MaskingParams:
    seed: int = 7
    cases: int = 2000


@dataclass(frozen=True, slots=True)
class MergeParams:
    seed: int = 1
    incidents: int = 200
    background: int = 3000
    days: int = 14


@dataclass(frozen=True, slots=True)
class SimilarParams:
    past: int = 20_000
    queries: int = 1_000
    with_use: bool = False


@dataclass(frozen=True, slots=True)
class ReportParams:
    reports: int = 2000
    seed: int = 12345
    end: date = date(2026, 11, 20)  # the report's day (Asia/Shanghai); fixed: reproducible
    pdf: bool = True

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "end": self.end.isoformat()}


@dataclass(frozen=True, slots=True)
class EvalPlan:
    parts: tuple[str, ...]
    out_dir: Path
    masking: MaskingParams = field(default_factory=MaskingParams)
    merge: MergeParams = field(default_factory=MergeParams)
    similar: SimilarParams = field(default_factory=SimilarParams)
    report: ReportParams = field(default_factory=ReportParams)


def parse_parts(value: str) -> tuple[str, ...]:
    """``"all"``, or parts separated by commas, in the canonical order, each once.

    >>> parse_parts("report,masking")
    ('masking', 'report')
    """
    names = [p.strip().lower() for p in value.split(",") if p.strip()]
    if not names:
        raise ValueError("no evaluation part given")
    if "all" in names:
        if len(names) > 1:
            raise ValueError("'all' cannot be combined with other parts")
        return PARTS
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown evaluation part(s) {unknown}; choose from {list(PARTS)}, all")
    return tuple(p for p in PARTS if p in names)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """``citystream eval``'s options for the issue-6 parts (``--output`` and the dispatch
    options are the command's own)."""
    parser.add_argument(
        "--parts", type=_parts_arg, default=("dispatch",),
        help=f"comma-separated, of {', '.join(PARTS)}; or all (default: dispatch)",
    )  # fmt: skip
    parser.add_argument(
        "--out-dir", type=Path, default=None,
        help="where eval-<part>.json/.md go (default: the folder of --output)",
    )  # fmt: skip
    parser.add_argument("--masking-seed", type=int, default=MaskingParams().seed)
    parser.add_argument("--masking-cases", type=_positive, default=MaskingParams().cases)
    parser.add_argument("--merge-seed", type=int, default=MergeParams().seed)
    parser.add_argument("--merge-incidents", type=_positive, default=MergeParams().incidents)
    parser.add_argument("--merge-background", type=_positive, default=MergeParams().background)
    parser.add_argument("--merge-days", type=_positive, default=MergeParams().days)
    parser.add_argument("--similar-past", type=_positive, default=SimilarParams().past)
    parser.add_argument("--similar-queries", type=_positive, default=SimilarParams().queries)
    parser.add_argument(
        "--with-use", action="store_true",
        help="similar cases: also the Universal Sentence Encoder (ONNX; minutes)",
    )  # fmt: skip
    parser.add_argument(
        "--report-reports",
        type=_positive,
        default=ReportParams().reports,
        help="simulated reports in the report's day (as many the day before)",
    )
    parser.add_argument("--report-seed", type=int, default=ReportParams().seed)
    parser.add_argument(
        "--report-end",
        type=date.fromisoformat,
        default=ReportParams().end,
        help="the report's day, YYYY-MM-DD",
    )
    parser.add_argument("--report-no-pdf", action="store_true")


def _parts_arg(value: str) -> tuple[str, ...]:
    try:
        return parse_parts(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def eval_plan(args: argparse.Namespace) -> EvalPlan:
    """The plan from ``citystream eval``'s parsed arguments."""
    out_dir = args.out_dir if args.out_dir is not None else Path(args.output).parent
    return EvalPlan(
        parts=tuple(args.parts),
        out_dir=Path(out_dir),
        masking=MaskingParams(seed=args.masking_seed, cases=args.masking_cases),
        merge=MergeParams(
            seed=args.merge_seed,
            incidents=args.merge_incidents,
            background=args.merge_background,
            days=args.merge_days,
        ),
        similar=SimilarParams(
            past=args.similar_past, queries=args.similar_queries, with_use=args.with_use
        ),
        report=ReportParams(
            reports=args.report_reports,
            seed=args.report_seed,
            end=args.report_end,
            pdf=not args.report_no_pdf,
        ),
    )


def envelope(
    part: str, parameters: Mapping[str, object], results: Mapping[str, object], seconds: float
) -> dict[str, object]:
    """One result file: what was measured, with what, how long it took, and where."""
    return {
        "part": part,
        "parameters": dict(parameters),
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": dict(results),
    }


def write_result(out_dir: Path, doc: Mapping[str, object], markdown: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"eval-{doc['part']}.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown, encoding="utf-8")
    return path


# ---- pure formatting -------------------------------------------------------------------------
def _f(value: object, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "–"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _params_line(doc: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in doc["parameters"].items())
    return f"_parameters: {params}; {doc['seconds']} s_"


def decoys_masked(cases: Sequence[Any], predictions: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Decoys (things that look like personal data and are not) that a predicted span
    overlaps, by kind: ``{"total", "masked", "by_kind": {kind: [masked, of]}}``."""
    by_kind: dict[str, list[int]] = {}
    for case, predicted in zip(cases, predictions, strict=True):
        for decoy in case.decoys:
            counts = by_kind.setdefault(decoy.kind, [0, 0])
            counts[1] += 1
            if any(p.start < decoy.end and decoy.start < p.end for p in predicted):
                counts[0] += 1
    return {
        "total": sum(n for _, n in by_kind.values()),
        "masked": sum(m for m, _ in by_kind.values()),
        "by_kind": {k: by_kind[k] for k in sorted(by_kind)},
    }


def masking_markdown(doc: Mapping[str, Any]) -> str:
    res = doc["results"]
    rows = [
        (t, s["true"], _f(s["recall"]), _f(s["masked_recall"]), s["predicted"], _f(s["precision"]))
        for t, s in res["per_type"].items()
    ]
    overall = res["overall"]
    rows.append(
        ("**all**", overall["true"], _f(overall["recall"]), "", overall["predicted"],
         _f(overall["precision"]))
    )  # fmt: skip
    decoys = res["decoys_masked"]
    lines = [
        f"### Masking personal data ({res['cases']} generated texts)",
        "",
        *_table(("type", "cases", "recall", "masked (any type)", "predicted", "precision"), rows),
        "",
        f"Decoys masked by mistake: {decoys['masked']} of {decoys['total']}"
        + (
            " (" + ", ".join(f"{k} {m}/{n}" for k, (m, n) in decoys["by_kind"].items() if m) + ")"
            if decoys["masked"]
            else ""
        ),
        "",
        _params_line(doc),
        "",
    ]
    return "\n".join(lines)


MERGE_RUNS = (
    ("truth", "the simulator's true code and place (the merge logic alone)"),
    ("stated", "true code, district/street only where the text states them"),
    ("command", "`citystream merge` on the shuffled reports: live dispatch and case logic"),
)


def merge_markdown(doc: Mapping[str, Any]) -> str:
    res = doc["results"]
    runs = res["runs"]
    rows = []
    for name, label in MERGE_RUNS:
        run = runs.get(name)
        if run is None:
            continue
        rows.append(
            (
                f"{label} (`{name}`)",
                _f(run["pairwise"]["precision"]),
                _f(run["pairwise"]["recall"]),
                f"{_f(run['bcubed']['precision'])} / {_f(run['bcubed']['recall'])}",
                _f(run.get("key_recall")),
                _f(run["whole_share"]),
            )
        )
    stream = res["stream"]
    lines = [
        f"### Duplicate merging ({stream['reports']} simulated reports, "
        f"{stream['incidents']} incidents, {stream['days']} days)",
        "",
        *_table(
            (
                "merge run",
                "pairwise P",
                "pairwise R",
                "B-cubed P / R",
                "key recall",
                "incidents whole",
            ),
            rows,
        ),  # fmt: skip
    ]
    command = runs.get("command")
    if command is not None:
        files = command.get("files", {})
        lines += [
            "",
            f"`{command.get('rejected', 0)}` reports rejected by the command. Reproduce: "
            f"`citystream merge --input {files.get('input')} --output OUT` then "
            f"`citystream eval-check merge --truth {files.get('truth')} --output OUT`.",
        ]
    lines += ["", _params_line(doc), ""]
    return "\n".join(lines)


FILTER_LABELS = (
    ("off", "no filters"),
    ("district", "district + time"),
    ("code", "code + time"),
    ("on", "code + district + time"),
    ("decided", "code and district as our dispatch decides them"),
)


def similar_markdown(doc: Mapping[str, Any]) -> str:
    res = doc["results"]
    options: dict[str, Any] = dict(res["options"])
    if res.get("command"):
        # The same embedder through the batch command and the board's SQL, from files.
        options["citystream similar"] = res["command"]
    names = list(options)
    header = ["filters", *(f"`{n}` P@5 / R@5" for n in names)]
    rows = []
    for mode, label in FILTER_LABELS:
        cells = []
        for name in names:
            m = options[name]["filters"].get(mode)
            cells.append(f"{_f(m['precision_at_5'])} / {_f(m['recall_at_5'])}" if m else "–")
        if any(c != "–" for c in cells):
            rows.append((label, *cells))
    config = res["config"]
    lines = [
        f"### Similar past cases ({config['queries']} held-out queries against "
        f"{config['past']} past cases, k={config['k']})",
        "",
        *_table(header, rows),
        "",
        "A hit: a past case with the query's code and district.",
    ]
    files = (res.get("command") or {}).get("files")
    if files:
        lines.append(
            f"Reproduce: `citystream similar --cases {files['cases']} --input {files['off']} "
            f"--output OUT --k {config['k']}`, then `citystream eval-check similar --cases "
            f"{files['cases']} --truth {files['truth']} --output OUT`.")
    if res.get("skipped"):
        lines.append(f"Not run: {res['skipped']}.")
    lines += ["", _params_line(doc), ""]
    return "\n".join(lines)


def report_markdown(doc: Mapping[str, Any]) -> str:
    res = doc["results"]
    stored = res["stored"]
    rows = [
        ("simulate, ingest, dispatch, verdicts (setup)", f"{res['prepare_s']:.1f} s"),
        ("store into chDB (migrations + inserts)", f"{res['store_s']:.1f} s"),
        ("**generate the day report** (queries, charts, HTML"
         + (", PDF" if res["pdf"] else "") + ")", f"**{res['generate_s']:.2f} s**"),
    ]  # fmt: skip
    lines = [
        f"### Day report on {res['reports_in_day']} reports of {res['day']} "
        f"(and {res['reports_in_previous_day']} the day before; "
        f"{stored.get('dispatch_decisions_log', 0)} decisions stored)",
        "",
        *_table(("step", "time"), rows),
        "",
        f"Files: {', '.join(res['files'])}; {res['withheld']} item(s) withheld by the content "
        f"screen; {res['dead_letters']} dead letter(s) while storing.",
        "",
        _params_line(doc),
        "",
    ]
    return "\n".join(lines)


MARKDOWN: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "masking": masking_markdown,
    "merge": merge_markdown,
    "similar": similar_markdown,
    "report": report_markdown,
}


def timings_markdown(timings: Sequence[tuple[str, float, str]]) -> str:
    """The closing table: each part's wall time and where its result went."""
    total = sum(s for _, s, _ in timings)
    rows = [(part, f"{seconds:.1f} s", path) for part, seconds, path in timings]
    rows.append(("**total**", f"**{total:.1f} s**", ""))
    return "\n".join(["### Evaluation time", "", *_table(("part", "time", "result"), rows), ""])


# ---- runners (I/O) ---------------------------------------------------------------------------
def run_masking(
    domain: Any, params: MaskingParams, run_command: RunCommand, data_dir: Path
) -> dict[str, object]:
    """``citystream mask`` over the test set's texts, its spans checked against the truth."""
    from processors.pii_testset import pii_cases, write_masking_set

    source, truth = write_masking_set(pii_cases(params.seed, params.cases, domain), data_dir)
    output = data_dir / "masking.masked.jsonl"
    _command(run_command, ["mask", "--input", str(source), "--output", str(output)])
    return {**check_masking(truth, output),
            "files": {"input": str(source), "truth": str(truth), "output": str(output)}}


def check_masking(truth: Path, output: Path) -> dict[str, object]:
    """The masking figures of ``citystream mask``'s output against the truth file."""
    from processors.pii_testset import masking_report, read_masking_truth

    cases = read_masking_truth(truth)
    found = read_mask_output(output)
    predictions = [found.get(case_id, ()) for case_id, _ in cases]
    by_text = {case.text: p for (_, case), p in zip(cases, predictions, strict=True)}
    report = masking_report([case for _, case in cases], lambda text: by_text[text])
    report["decoys_masked"] = decoys_masked([case for _, case in cases], predictions)
    report["rejected"] = sum(case_id not in found for case_id, _ in cases)
    return report


def read_mask_output(path: Path) -> dict[str, tuple[Any, ...]]:
    from processors.pii import PiiSpan
    from streams.batch import read_jsonl

    return {item["id"]: tuple(PiiSpan(s["type"], s["start"], s["end"]) for s in item["spans"])
            for item in read_jsonl(path)}


def _command(run_command: RunCommand, argv: Sequence[str]) -> None:
    status = run_command(argv)
    if status != 0:
        raise RuntimeError(f"citystream {' '.join(argv)} exited {status}")


def run_merge(
    domain: Any, params: MergeParams, run_command: RunCommand, data_dir: Path
) -> dict[str, object]:
    from processors.merge_eval import run

    def merge(source: Path, output: Path) -> int:
        return run_command(["merge", "--input", str(source), "--output", str(output)])

    return run(domain, params.seed, params.incidents, params.background, params.days,
               merge_command=merge, data_dir=data_dir)


def _log(line: str) -> None:
    print(line, flush=True)


def run_similar(
    params: SimilarParams, repository: Path, run_command: RunCommand, data_dir: Path
) -> dict[str, object]:
    from models.embedding.encode import OnnxEmbedder
    from models.embedding.evaluate import (
        EvalConfig,
        cases_of,
        decided_filters,
        run_option,
        simulate,
    )
    from models.embedding.export import BUILD_DIR, export_case_embedder, export_use

    config = EvalConfig(past=params.past, queries=params.queries)
    past_records, query_records = simulate(config)
    past, queries = cases_of(past_records), cases_of(query_records)
    report: dict[str, object] = {"config": config.to_json()}
    decided = None
    if (repository / "event_classifier").is_dir():
        decided = decided_filters(query_records, repository)
        resolved = [d for d in decided if d[1] is not None]
        report["dispatch_decision"] = {
            "code_accuracy": round(
                sum(d[0] == q.code for d, q in zip(decided, queries, strict=True)) / len(queries), 4
            ),
            "district_resolved": round(len(resolved) / len(queries), 4),
        }
    else:
        report["skipped"] = f"the 'decided' filters: no dispatch models under {repository}"
    options: dict[str, object] = {}
    names = ["case_embedder", *(["use"] if params.with_use else [])]
    for name in names:
        path = (
            export_case_embedder(BUILD_DIR, log=_log)
            if name == "case_embedder"
            else (export_use(BUILD_DIR))
        )
        embedder = OnnxEmbedder(path)
        result = run_option(name, embedder.embed, past, queries, config, 0, decided=decided)
        options[name] = {"version": embedder.version, **result}
    if not params.with_use:
        note = "USE v3 (slow: about 90 texts/s; `citystream eval --with-use`)"
        report["skipped"] = "; ".join(filter(None, [str(report.get("skipped") or ""), note]))
    report["options"] = options
    report["command"] = similar_through_command(past, queries, decided, config, run_command,
                                                data_dir)
    return report


def similar_through_command(
    past: Sequence[Any], queries: Sequence[Any], decided: Sequence[Any] | None, config: Any,
    run_command: RunCommand, data_dir: Path,
) -> dict[str, object]:
    """The case embedder's figures again, through ``citystream similar`` over files (the
    board's SQL on a fresh chDB): no filter, and dispatch's code and district."""
    from models.embedding.evaluate import DECIDED, check_similar, write_similar_sets

    paths = write_similar_sets(past, queries, decided, config, data_dir)
    filters: dict[str, object] = {}
    for mode in ("off", *((DECIDED,) if decided is not None else ())):
        output = data_dir / f"similar.{mode}.found.jsonl"
        _command(run_command, ["similar", "--cases", str(paths["cases"]), "--input",
                               str(paths[mode]), "--output", str(output), "--k",
                               str(config.k)])
        filters[mode] = check_similar(paths["cases"], paths["truth"], output, config.k,
                                      windowed=mode != "off")
    return {"filters": filters, "files": {k: str(v) for k, v in paths.items()}}


def _day_start_utc(day: date) -> datetime:
    from processors.report import LOCAL

    return datetime(day.year, day.month, day.day, tzinfo=LOCAL).astimezone(UTC)


def run_report(settings: Any, domain: Any, params: ReportParams) -> dict[str, object]:
    """Simulate two days of reports (the report's day and the one before, for its
    comparison), store them as the worker would, and time the day report."""
    from models.scoring import build_dispatcher
    from models.simulator.feedback import StoredDecision, units_feedback
    from processors.content_screen import screen
    from processors.dashboard_refresh import insert_refreshed
    from processors.dispatch import request_from_row
    from processors.ingest import IngestContext, SourceMessage, StoredRow, group_outcomes, ingest
    from processors.report_run import generate_report
    from schemas.errors import DeadLetter
    from schemas.migrations import migrate
    from schemas.records import to_wire
    from streams.clickhouse import ChdbWarehouse
    from streams.sample import sample_records
    from streams.topics import (
        DISPATCH_FEEDBACK,
        DISPATCH_ORDERS,
        DISPATCH_REVIEW,
        kinds_by_topic,
        spec_for_kind,
    )
    from web.views import city_labels

    started = time.perf_counter()
    plain = settings.model_copy(update={"topic_prefix": ""})
    ctx = IngestContext(
        domain, kinds_by_topic(plain), settings.max_text_chars, settings.max_message_bytes
    )
    day_start = _day_start_utc(params.end)
    day_end = day_start + timedelta(days=1)
    truth: dict[str, dict[str, str]] = {}
    # N reports in the day, and N in the day before (the report compares the two).
    records = [
        record
        for run_id, seed, until in (
            ("evp", params.seed + 1, day_start),
            ("evd", params.seed, day_end),
        )
        for record in sample_records(
            domain, params.reports, seed, run_id, now=until - timedelta(seconds=1),
            span=timedelta(hours=24) - timedelta(seconds=2), truth=truth,
        )
    ]  # fmt: skip
    outcomes: list[StoredRow | DeadLetter] = []
    offset = 0

    def take(topic: str, record: Mapping[str, Any], at: datetime) -> StoredRow | DeadLetter:
        nonlocal offset
        offset += 1
        msg = SourceMessage(topic, 0, offset, at, None, json.dumps(record).encode())
        outcome = ingest(msg, ctx, at)
        outcomes.append(outcome)
        return outcome

    requests = []
    for record in records:
        at = datetime.fromisoformat(record.get("reported_at") or record["received_at"])
        stored = take(spec_for_kind(record["kind"]).name, record, at)
        if isinstance(stored, StoredRow):
            request = request_from_row(stored)
            if request is not None:
                requests.append(request)
    dispatcher = build_dispatcher(settings)
    decisions = []
    for lo in range(0, len(requests), 64):
        for decision in dispatcher.decide_batch(requests[lo : lo + 64]):
            # Decided two seconds after the report, as live: not at the time of this run.
            decided_at = decision.received_at + timedelta(seconds=2)
            decisions.append(decision.model_copy(update={"decided_at": decided_at}))
    stored_decisions = []
    for decision in decisions:
        topic = DISPATCH_ORDERS.name if decision.auto else DISPATCH_REVIEW.name
        take(topic, to_wire(decision), decision.decided_at)
        stored_decisions.append(
            StoredDecision(
                decision.input_id, decision.unit or "", decision.code, decision.auto,
                decision.received_at, decision.respond_by or decision.received_at,
                decision.decided_at,
            )
        )  # fmt: skip
    for verdict in units_feedback(stored_decisions, truth, now=day_end, seed=params.seed):
        take(DISPATCH_FEEDBACK.name, to_wire(verdict), verdict.given_at)
    batch = group_outcomes(outcomes)
    prepare_s = time.perf_counter() - started

    in_day = sum(1 for r in requests if day_start <= r.received_at < day_end)
    classes = city_labels(domain)["event_classes"]
    with tempfile.TemporaryDirectory(prefix="citystream-eval-report-") as tmp:
        started = time.perf_counter()
        warehouse = ChdbWarehouse(Path(tmp) / "chdb", "eval_report")
        try:
            migrate(warehouse)
            insert_refreshed(warehouse, (
                (table, rows[lo : lo + 2000])
                for table, rows in batch.rows_by_table.items()
                for lo in range(0, len(rows), 2000)
            ))
            store_s = time.perf_counter() - started
            started = time.perf_counter()
            files = generate_report(
                warehouse, "day", params.end, screen, Path(tmp) / "reports", pdf=params.pdf,
                event_classes=classes, now=day_end + timedelta(hours=1),
            )  # fmt: skip
            generate_s = time.perf_counter() - started
        finally:
            warehouse.close()
        written = [files.html_path.name] + ([files.pdf_path.name] if files.pdf_path else [])
        sizes = {p.name: p.stat().st_size for p in (files.html_path, files.pdf_path) if p}
    return {
        "day": params.end.isoformat(),
        "reports_in_day": in_day,
        "reports_in_previous_day": len(requests) - in_day,
        "stored": {table: len(rows) for table, rows in sorted(batch.rows_by_table.items())},
        "dead_letters": len(batch.dead_letters),
        "prepare_s": round(prepare_s, 2),
        "store_s": round(store_s, 2),
        "generate_s": round(generate_s, 3),
        "generate_s_by_report_run": files.seconds,
        "pdf": params.pdf,
        "pdf_written": files.pdf_path is not None,
        "files": written,
        "bytes": sizes,
        "withheld": files.withheld,
        "summary": files.summary,
    }


def run_plan(
    plan: EvalPlan, settings: Any, run_command: RunCommand
) -> list[tuple[str, float, str]]:
    """Run the issue-6 parts of ``plan`` (dispatch is the CLI's own), write each result,
    print each summary; returns (part, seconds, path) for the closing table."""
    from schemas.domain import Domain

    domain = Domain.load(settings.domain_file)
    timings: list[tuple[str, float, str]] = []
    for part in plan.parts:
        if part == "dispatch":
            continue
        _log(f"== eval {part} ...")
        started = time.perf_counter()
        params: Mapping[str, object]
        if part == "masking":
            params = asdict(plan.masking)
            results = run_masking(domain, plan.masking, run_command, plan.out_dir / DATA_DIR)
        elif part == "merge":
            params = asdict(plan.merge)
            results = run_merge(domain, plan.merge, run_command, plan.out_dir / DATA_DIR)
        elif part == "similar":
            params = asdict(plan.similar)
            results = run_similar(plan.similar, settings.model_repository, run_command,
                                  plan.out_dir / DATA_DIR)
        else:
            params = plan.report.to_json()
            results = run_report(settings, domain, plan.report)
        seconds = time.perf_counter() - started
        doc = envelope(part, params, results, seconds)
        markdown = MARKDOWN[part](doc)
        path = write_result(plan.out_dir, doc, markdown)
        print(markdown, flush=True)
        _log(f"{part}: {seconds:.1f} s -> {path}")
        timings.append((part, seconds, str(path)))
    return timings
