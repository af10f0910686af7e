"""The ``citystream`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from streams.batch_cli import (
    add_batch_command,
    model_settings,
    run_batch_command,
    run_driver_command,
)
from streams.detect_cli import cmd_detect
from streams.detect_cli import register as register_detect
from streams.ocr_cli import cmd_ocr
from streams.ocr_cli import register as register_ocr
from streams.settings import Settings
from streams.similar_cli import cmd_similar
from streams.similar_cli import register as register_similar


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"citystream: bad settings in the environment:\n{exc}") from exc


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka_admin import create_topics

    created, existing = create_topics(settings)
    for name in created:
        print(f"created  {name}")
    for name in existing:
        print(f"exists   {name}")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.migrations import migrate
    from streams.clickhouse import open_warehouse

    warehouse = open_warehouse(settings)
    try:
        ran = migrate(warehouse)
        print(
            f"{warehouse.dialect} ClickHouse {warehouse.server_version()}, "
            f"database {warehouse.database}: applied {[f'{m.version:04d}_{m.name}' for m in ran]}"
        )
    finally:
        warehouse.close()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from processors.worker import build_state, create_app
    from schemas.migrations import migrate
    from streams.clickhouse import open_warehouse
    from streams.kafka_admin import create_topics

    create_topics(settings)
    warehouse = open_warehouse(settings)
    migrate(warehouse)
    state = build_state(settings, warehouse)
    app = create_app(state)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        state.sink.close()
    return 0


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.domain import Domain
    from streams.sample import json_lines, sample_records

    domain = Domain.load(settings.domain_file)
    run_id = args.run_id or uuid.uuid4().hex[:8]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict[str, str]] = {}
    with out.open("wb") as fh:
        records = sample_records(
            domain, args.count, args.seed, run_id, args.invalid_every,
            span=timedelta(hours=args.span_hours), truth=truth, bursts=args.bursts,
        )
        for line in json_lines(records):
            fh.write(line + b"\n")
    bursts = f" and the reports of {args.bursts} incidents" if args.bursts else ""
    print(f"wrote {args.count} records{bursts} to {out} (run {run_id})")
    if args.truth:
        Path(args.truth).write_bytes(
            b"".join(orjson.dumps({"id": k, **v}) + b"\n" for k, v in truth.items())
        )
        print(f"wrote the right unit of {len(truth)} reports to {args.truth}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date

    from processors.content_screen import screen
    from processors.report import default_end
    from processors.report_run import generate_report
    from schemas.domain import Domain
    from streams.clickhouse import WarehouseError
    from streams.query import QueryRefused, WorkerUnavailable, analyst_reads
    from web.views import city_labels

    end = date.fromisoformat(args.end) if args.end else default_end(datetime.now(UTC))
    classes = city_labels(Domain.load(settings.domain_file))["event_classes"]
    out_dir = Path(args.out_dir) if args.out_dir else settings.reports_path
    try:
        with analyst_reads(settings) as reads:
            files = generate_report(reads, args.period, end, screen, out_dir,
                                    pdf=not args.no_pdf, event_classes=classes)
    except (WarehouseError, QueryRefused) as exc:
        print(f"citystream: {exc}", file=sys.stderr)
        return 1
    except WorkerUnavailable as exc:
        print(f"citystream: {exc}; start it with `make run`", file=sys.stderr)
        return 1
    print(f"{args.period} report to {end}: {files.html_path}")
    if files.pdf_path:
        print(f"PDF: {files.pdf_path}")
    print(f"{files.seconds:.1f} s; {files.withheld} item(s) withheld by the content screen")
    print(files.summary)
    return 0


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from web.accounts_cli import run

    return run(args, settings)


def _run_truth(path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """A sample's truth file (``citystream sample --truth``) and its run's id prefix; None
    (with the reason printed) unless it holds one run's reports."""
    truth = {}
    for line in path.read_bytes().splitlines():
        doc = orjson.loads(line)
        truth[doc["id"]] = doc
    prefixes = sorted({record_id.rsplit("-", 1)[0] for record_id in truth})
    if len(prefixes) != 1 or not prefixes[0].replace("_", "").isalnum():
        print("citystream: the truth file must hold one run's reports", file=sys.stderr)
        return truth, None
    return truth, prefixes[0]


def cmd_cases_eval(args: argparse.Namespace, settings: Settings) -> int:
    """The live merge against the sample's incidents: pairwise and B-cubed scores."""
    from processors.merge_eval import clustering_scores
    from streams.query import analyst_reads

    truth, prefix = _run_truth(Path(args.truth))
    if prefix is None:
        return 2
    with analyst_reads(settings) as reads:
        rows = reads.query(
            f"SELECT input_id, case_id FROM case_links WHERE input_id LIKE '{prefix}-%'"
        ).dicts()
    predicted = {r["input_id"]: r["case_id"] for r in rows}
    # Reports of no incident are each their own; reports never linked are left out.
    gold = {i: doc.get("incident") or f"alone:{i}" for i, doc in truth.items() if i in predicted}
    if not gold:
        print("citystream: no linked reports of this run yet", file=sys.stderr)
        return 1
    scores = clustering_scores(gold, predicted)
    incidents = {g for g in gold.values() if not g.startswith("alone:")}
    cases = len(set(predicted.values()))
    print(f"live merge on {len(gold)} linked reports ({len(incidents)} incidents, {cases} "
          f"cases): pairwise precision {scores.pairwise_precision:.3f}, recall "
          f"{scores.pairwise_recall:.3f}; B-cubed {scores.bcubed_precision:.3f} / "
          f"{scores.bcubed_recall:.3f}")
    return 0


def cmd_units_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from models.simulator.feedback import StoredDecision, units_feedback
    from schemas.records import to_wire
    from streams.codecs import encode_json
    from streams.kafka_admin import producer
    from streams.query import analyst_reads
    from streams.topics import DISPATCH_FEEDBACK, message_key
    from web.views import to_utc

    truth, prefix = _run_truth(Path(args.truth))
    if prefix is None:
        return 2
    prefixes = [prefix]
    with analyst_reads(settings) as reads:
        result = reads.query(
            "SELECT input_id, unit, code, auto, received_at, respond_by, decided_at "
            f"FROM dispatch_decisions WHERE input_id LIKE '{prefixes[0]}-%'"
        )
    decisions = [
        StoredDecision(
            r["input_id"], r["unit"], r["code"], bool(r["auto"]),
            to_utc(r["received_at"]), to_utc(r["respond_by"]), to_utc(r["decided_at"]),
        )
        for r in result.dicts()
    ]
    verdicts = units_feedback(
        decisions, truth, now=datetime.now(UTC), review_share=args.review_share
    )
    prod = producer(settings)
    try:
        topic = settings.topic(DISPATCH_FEEDBACK.name)
        futures = []
        for record in verdicts:
            wire = to_wire(record)
            futures.append(
                prod.send(topic, value=encode_json(wire), key=message_key(DISPATCH_FEEDBACK, wire))
            )
        for future in futures:
            future.get(timeout=30)
    finally:
        prod.close()
    returned = sum(v.verdict == "corrected" and bool(v.auto) for v in verdicts)
    print(
        f"{len(verdicts)} verdicts on {len(decisions)} decisions to {topic} "
        f"({returned} automatic orders returned as not the unit's)"
    )
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka_admin import producer
    from streams.replay import read_lines, replay
    from streams.topics import CATALOGUE

    forced = None
    if args.topic:
        matches = [s for s in CATALOGUE if s.name == args.topic]
        if not matches:
            raise SystemExit(f"citystream: --topic must be one of {[s.name for s in CATALOGUE]}")
        forced = matches[0]
    prod = producer(settings)
    try:
        report = replay(
            settings,
            prod,
            read_lines(Path(args.file)),
            rate=args.rate or None,
            forced=forced,
            progress=(lambda r: print(f"  {r.sent} sent", file=sys.stderr))
            if args.verbose
            else None,
        )
    finally:
        prod.close()
    if report.first_error:
        print(f"delivery failed: {report.first_error}", file=sys.stderr)
    for number, reason in report.unroutable[:20]:
        print(f"line {number}: not sent: {reason}", file=sys.stderr)
    rate = report.sent / report.seconds if report.seconds else 0.0
    print(
        f"replayed {args.file}: {report.sent} sent, {report.confirmed} confirmed, "
        f"{report.failed} failed, {len(report.unroutable)} unroutable, "
        f"{report.seconds:.1f}s ({rate:.0f} msg/s)"
    )
    return 0 if report.ok else 1


def cmd_frames(args: argparse.Namespace, settings: Settings) -> int:
    from processors.camera_config import CameraConfigError, load_camera_config
    from schemas.domain import Domain
    from streams.frames import FrameOptions, FrameSourceError, publish_frames
    from streams.kafka_admin import producer
    from streams.topics import FRAMES_RAW

    try:
        camera = load_camera_config(Path(args.camera), Domain.load(settings.domain_file))
    except (CameraConfigError, OSError) as exc:
        raise SystemExit(f"citystream frames: {exc}") from exc
    start = None
    if args.start:
        start = datetime.fromisoformat(args.start)
        if start.tzinfo is None:
            raise SystemExit("citystream frames: --start needs a UTC offset (+08:00)")
    options = FrameOptions(
        camera_id=camera.camera_id, site=camera.location.model_dump(), fps=args.fps,
        quality=args.quality, max_width=args.max_width, start=start, realtime=args.realtime,
        refs=args.refs, limit=args.limit,
    )
    # The request may carry a whole frame; JPEG does not compress further.
    prod = producer(settings, max_request_size=FRAMES_RAW.max_message_bytes + 64 * 1024,
                    linger_ms=20)
    try:
        report = publish_frames(args.source, options, prod.send, settings.topic)
    except FrameSourceError as exc:
        raise SystemExit(f"citystream frames: {exc}") from exc
    finally:
        prod.close()
    for reason in report.refused[:20]:
        print(f"citystream frames: refused {reason}", file=sys.stderr)
    if report.first_error:
        print(f"citystream frames: delivery failed: {report.first_error}", file=sys.stderr)
    topic = "frames.refs" if args.refs else FRAMES_RAW.name
    print(f"citystream frames: {report.published} frames of camera {camera.camera_id} to "
          f"{topic}, {len(report.refused)} refused, {report.seconds:.1f} s", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_vision(args: argparse.Namespace, settings: Settings) -> int:
    from processors.vision_stage import serve

    return serve(settings, args.metrics_port)


def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka_admin import wait_until_stored

    started = time.monotonic()
    try:
        wait_until_stored(settings, args.timeout)
    except TimeoutError as exc:
        print(f"citystream: {exc}", file=sys.stderr)
        return 1
    print(
        f"group {settings.consumer_group} has stored everything ({time.monotonic() - started:.1f}s)"
    )
    return 0


def _print_result(columns: list[str], rows: list[list[Any]], fmt: str) -> None:
    from streams.query import render

    sys.stdout.write(render(columns, rows, fmt))


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from streams.clickhouse import WarehouseError
    from streams.query import (
        QueryRefused,
        WorkerUnavailable,
        analyst_reads,
        cut,
        query_limits,
        read_only,
    )

    try:
        sql = read_only(args.sql)
    except QueryRefused as exc:
        print(f"citystream: {exc}", file=sys.stderr)
        return 2
    limits = query_limits(sql, settings.query_max_rows, settings.query_max_seconds)
    try:
        with analyst_reads(settings) as reads:
            result, _ = cut(reads.query(sql, limits), settings.query_max_rows)
    except (WarehouseError, QueryRefused) as exc:
        print(f"citystream: {exc}", file=sys.stderr)
        return 1
    except WorkerUnavailable as exc:
        print(f"citystream: {exc}; start it with `make run`", file=sys.stderr)
        return 1
    _print_result(result.columns, [list(r) for r in result.rows], args.format)
    if result.truncated:
        print(
            f"citystream: only the first {len(result.rows)} rows "
            "(CITYSTREAM_QUERY_MAX_ROWS); aggregate or add a LIMIT",
            file=sys.stderr,
        )
    return 0


def cmd_catalogue(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.catalogue import CATALOGUE

    if args.format == "json":
        doc = [{"name": v.name, "row": v.row, "columns": v.columns} for v in CATALOGUE]
        print(json.dumps(doc, ensure_ascii=False, indent=1))
        return 0
    for view in CATALOGUE:
        print(f"{view.name}: {view.row}")
        width = max(len(c) for c in view.columns)
        for column, meaning in view.columns.items():
            print(f"  {column.ljust(width)}  {meaning}")
        print()
    return 0


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from infra.local_stack import stack_command

    return stack_command(args.action, settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streams.bench import run_bench

    return run_bench(settings, args.events, Path(args.output))


def cmd_bench_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from streams.dispatch_bench import run_dispatch_bench

    rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    return run_dispatch_bench(settings, args.events, rates, Path(args.output))


def cmd_bench_storage(args: argparse.Namespace, settings: Settings) -> int:
    from streams.storage_bench import run_storage_bench

    result = run_storage_bench(
        settings,
        Path(args.output),
        batches=args.batches,
        batch_size=args.batch_size,
        refresh_every=args.refresh_every,
    )
    return 0 if result["figures"]["panels_equal"] else 1


def cmd_bench_batch(args: argparse.Namespace, settings: Settings) -> int:
    from streams.batch_bench import main as bench_batch

    return bench_batch(Path(args.output), args.scale,
                       args.commands.split(",") if args.commands else None)


def cmd_bench_vision(args: argparse.Namespace, settings: Settings) -> int:
    from streams.vision_bench import main as bench_vision

    return bench_vision(Path(args.output), args.frames, args.photos, settings.cache_dir)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from models.embedding.train import EmbedderTrainingConfig
    from models.train import TrainingConfig, train
    from schemas.domain import Domain

    config = TrainingConfig(records=args.records, seed=args.seed)
    defaults = EmbedderTrainingConfig()
    embedder = EmbedderTrainingConfig(
        records=args.embedder_records or defaults.records,
        epochs=args.embedder_epochs or defaults.epochs,
    )
    report = train(
        Domain.load(settings.domain_file),
        settings.model_repository,
        settings.dispatch_policy,
        config,
        embedder=None if args.no_embedder else embedder,
    )
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    print(f"models in {settings.model_repository}, policy {settings.dispatch_policy}")
    return 0


def _dispatcher(settings: Settings, triton: str | None) -> Any:
    from models.inference import BackendUnavailable, ModelMismatch
    from models.scoring import build_dispatcher
    from processors.dispatch import PolicyError

    try:
        return build_dispatcher(settings, triton_url=triton)
    except (PolicyError, BackendUnavailable, ModelMismatch) as exc:
        raise SystemExit(f"citystream: {exc}") from exc


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from models.eval_suite import DATA_DIR, eval_plan, run_plan, timings_markdown

    plan = eval_plan(args)
    timings: list[tuple[str, float, str]] = []
    if "dispatch" in plan.parts:
        from models.evaluate import evaluate, markdown
        from models.train import TrainingConfig
        from processors.dispatch import DispatchPolicy, PolicyError
        from schemas.domain import Domain

        started = time.perf_counter()
        domain = Domain.load(settings.domain_file)
        try:
            policy = DispatchPolicy.load(settings.dispatch_policy, domain)
        except PolicyError as exc:
            raise SystemExit(f"citystream: {exc}") from exc
        route = ["--via", "triton", "--triton-url", args.triton] if args.triton else []
        out = Path(args.output)

        def score(source: Path, output: Path) -> int:
            # The command itself, as an analyst would run it on these files.
            return main(["score", "--input", str(source), "--output", str(output), *route])

        report = evaluate(
            score, domain, TrainingConfig(records=args.records, seed=args.seed),
            plan.out_dir / DATA_DIR,
            {"auto_threshold": policy.auto_threshold,
             "target_accuracy": policy.target_accuracy,
             "model_versions": policy.model_versions},
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
        print(f"full report: {out}")
        timings.append(("dispatch", time.perf_counter() - started, str(out)))
    timings += run_plan(plan, settings, main)
    if len(timings) > 1:
        print(timings_markdown(timings))
    return 0


def cmd_eval_check(args: argparse.Namespace, settings: Settings) -> int:
    """The figures of a batch command's output file against an eval truth file."""
    from streams.batch import read_jsonl

    truth, output = Path(args.truth), Path(args.output)
    if args.part == "dispatch":
        from models.evaluate import check

        result = check(truth, output)
    elif args.part == "masking":
        from models.eval_suite import check_masking

        result = check_masking(truth, output)
    elif args.part == "merge":
        from processors.merge_eval import check_merge

        result = check_merge(truth, output)
    else:
        from models.embedding.evaluate import EvalConfig, check_similar

        if not args.cases:
            raise SystemExit("citystream eval-check similar: --cases is needed")
        # A query line with "since" was searched in a window, as the eval's "decided" set.
        windowed = any("since" in q for q in read_jsonl(Path(args.input))) if args.input else False
        result = check_similar(Path(args.cases), truth, output, args.k or EvalConfig().k,
                               windowed)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from models.batch_score import SCORE_FIELDS, batch_context, score_lines
    from models.train import offline_context

    dispatcher = _dispatcher(model_settings(args, settings), None)
    ctx = batch_context(offline_context(dispatcher.domain))
    return run_batch_command(
        args, "score", lambda lines: score_lines(lines, dispatcher, ctx), SCORE_FIELDS
    )


def cmd_merge(args: argparse.Namespace, settings: Settings) -> int:
    from models.batch_score import batch_context, decide_lines
    from models.train import offline_context
    from processors.merge_batch import batch_policy
    from streams.batch_merge import run_merge

    dispatcher = _dispatcher(model_settings(args, settings), None)
    ctx = batch_context(offline_context(dispatcher.domain))
    policy = batch_policy(dispatcher.domain)

    def driver(source: Any, sink: Any, rejects: Any) -> Any:
        return run_merge(
            source, sink, rejects,
            lambda lines: decide_lines(lines, dispatcher, ctx, time_field="time"), policy,
            workdir=Path(args.workdir) if args.workdir else None,
        )

    return run_driver_command(args, "merge", driver)


def cmd_mask(args: argparse.Namespace, settings: Settings) -> int:
    from processors.text_batch import MASK_FIELDS, mask_lines

    return run_batch_command(
        args, "mask", lambda lines: mask_lines(lines, settings.max_text_chars), MASK_FIELDS
    )


def cmd_analyse(args: argparse.Namespace, settings: Settings) -> int:
    from processors.text_batch import ANALYSE_FIELDS, analyse_lines
    from schemas.domain import Domain

    domain = Domain.load(settings.domain_file)
    return run_batch_command(
        args, "analyse", lambda lines: analyse_lines(lines, domain, settings.max_text_chars),
        ANALYSE_FIELDS,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citystream",
        description="Real-time AI pipeline for city governance. Settings come from "
        "CITYSTREAM_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", help="create the catalogue's topics (existing ones are kept)")
    sub.add_parser("migrate", help="apply ClickHouse migrations")
    sub.add_parser("worker", help="run the Faust ingest worker (metrics on the web port)")

    p = sub.add_parser("sample", help="write a seeded sample stream (JSON Lines)")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--run-id", default=None, help="id prefix (default: random, so runs add up)")
    p.add_argument("--invalid-every", type=int, default=0, help="break every Nth record")
    p.add_argument("--bursts", type=int, default=0,
                   help="add N incidents reported by several people (duplicates to merge)")
    p.add_argument("--span-hours", type=float, default=1 / 6,
                   help="report times spread over this many hours before now (default 10 min)")
    p.add_argument("--output", required=True)
    p.add_argument("--truth", default=None,
                   help="also write each report's right unit and code (JSON Lines), for "
                   "`citystream units-feedback`")

    p = sub.add_parser(
        "units-feedback",
        help="play the units on a sampled run: accept or return its automatic orders, and "
        "handle part of its review queue (verdicts to dispatch.feedback)",
    )
    p.add_argument("--truth", required=True, help="the file `citystream sample --truth` wrote")
    p.add_argument("--review-share", type=float, default=0.5,
                   help="share of the review queue a simulated dispatcher handles")

    p = sub.add_parser(
        "cases-eval",
        help="score the live duplicate merging of a sampled run against its incidents",
    )
    p.add_argument("--truth", required=True, help="the file `citystream sample --truth` wrote")

    p = sub.add_parser(
        "report", help="write a day/week/month report (HTML, and PDF) from ClickHouse"
    )
    p.add_argument("--period", choices=("day", "week", "month"), default="day")
    p.add_argument("--end", default=None,
                   help="last day covered, YYYY-MM-DD (default: yesterday, Asia/Shanghai)")
    p.add_argument("--out-dir", default=None, help="default: var/reports")
    p.add_argument("--no-pdf", action="store_true")

    p = sub.add_parser("replay", help="replay a JSON Lines file into the input topics")
    p.add_argument("file")
    p.add_argument("--rate", type=float, default=0, help="messages per second (0: unpaced)")
    p.add_argument("--topic", default=None, help="send every line to this catalogue topic")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser(
        "frames", help="publish a camera's frames (video file, stream URL, photos) to Kafka"
    )
    p.add_argument("source", help="a video file, an rtsp:// or http:// stream, a folder of "
                   "photos or one photo")
    p.add_argument("--camera", required=True,
                   help="the camera's configuration (id, place, zones): e.g. "
                   "infra/cameras/vtest.json")
    p.add_argument("--fps", type=float, default=2.0, help="frames kept per second of video")
    p.add_argument("--quality", type=int, default=85, choices=range(30, 101),
                   metavar="30-100", help="JPEG quality")
    p.add_argument("--max-width", type=int, default=None, help="shrink wider frames to this")
    p.add_argument("--start", default=None,
                   help="a video file's first frame time, ISO 8601 with offset (default: now)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a video file as the camera would send it")
    p.add_argument("--refs", action="store_true",
                   help="for photos already in an object store (4K): publish references to "
                   "frames.refs instead of the bytes (nothing is copied; not for video)")
    p.add_argument("--limit", type=int, default=None, help="stop after N frames")

    p = sub.add_parser(
        "vision", help="run the vision stage: frames.raw through the detector, trackers and "
        "zone rules to vision.detections and camera city events"
    )
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port")

    p = sub.add_parser("wait", help="wait until the ingest group has stored every message")
    p.add_argument("--timeout", type=float, default=300)

    p = sub.add_parser("query", help="run a read-only SQL query")
    p.add_argument("sql")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    from web.accounts_cli import register as register_users

    register_users(sub)

    p = sub.add_parser("catalogue", help="the views analysts query, and their columns")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = sub.add_parser("stack", help="the local stack: Kafka broker and worker")
    p.add_argument("action", choices=("up", "down", "status"))

    p = sub.add_parser("bench-dispatch", help="latency from Kafka to decision, Triton vs "
                       "in-process, at a steady rate")
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--rate", default="500", help="reports per second; several: 250,500")
    p.add_argument("--output", default="bench-results/dispatch.json")

    p = sub.add_parser("bench-storage", help="chDB inserts of decisions with the dashboards' "
                       "materialized views against the worker's refresh, side by side")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=300)
    p.add_argument("--refresh-every", type=int, default=4,
                   help="batches per refresh (the worker: 2 s of 0.5 s sink flushes)")
    p.add_argument("--output", default="bench-results/storage.json")

    p = sub.add_parser("bench-batch", help="the batch tools' throughput and peak memory "
                       "at N and scale × N lines, side by side")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--commands", default=None, help="e.g. mask,merge (default: all)")
    p.add_argument("--output", default="bench-results/batch.json")

    p = sub.add_parser("bench-vision", help="the detector and OCR in-process and through "
                       "Triton at batches 1, 4, 16: frames per second, latency p50/p99")
    p.add_argument("--frames", type=int, default=96, help="vtest.avi frames for the detector")
    p.add_argument("--photos", type=int, default=16, help="sign photos for OCR")
    p.add_argument("--output", default="bench-results/vision.json")

    p = sub.add_parser("train", help="simulate history, train and calibrate the dispatch models "
                       "and the case embedder")
    p.add_argument("--records", type=int, default=24_000)
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--report", default="models/build/training_report.json")
    # Defaults: models.embedding.train.EmbedderTrainingConfig (its seed is fixed there).
    p.add_argument("--embedder-records", type=int, default=None,
                   help="simulated records for the case embedder (default 96,000)")
    p.add_argument("--embedder-epochs", type=int, default=None, help="default 6")
    p.add_argument("--no-embedder", action="store_true",
                   help="dispatch models only (no case_embedder in the repository)")

    p = sub.add_parser("eval", help="evaluate dispatch on held-out and hand-written reports; "
                       "with --parts, also masking, merging, similar cases, report time")
    p.add_argument("--records", type=int, default=24_000, help="as given to train")
    p.add_argument("--seed", type=int, default=20261126, help="as given to train")
    p.add_argument("--triton", default=None, help="Triton host:port (default: in-process)")
    p.add_argument("--output", default="bench-results/eval-dispatch.json")
    from models.eval_suite import add_eval_arguments

    add_eval_arguments(p)

    p = sub.add_parser(
        "eval-check",
        help="score a batch command's output against a truth file `make eval` wrote",
        description="Recompute an eval figure from files: e.g. `citystream merge --input "
        "bench-results/eval-data/merge.jsonl --output out.jsonl` then `citystream "
        "eval-check merge --truth bench-results/eval-data/merge.truth.jsonl --output "
        "out.jsonl`.",
    )
    p.add_argument("part", choices=("dispatch", "masking", "merge", "similar"))
    p.add_argument("--truth", required=True)
    p.add_argument("--output", required=True, help="the command's output file")
    p.add_argument("--cases", default=None, help="similar: the past cases file")
    p.add_argument("--input", default=None,
                   help="similar: the queries file (with filters: recall in their window)")
    p.add_argument("--k", type=int, default=None, help="similar: k (default 5)")

    add_batch_command(
        sub, "mask", "mask personal data in texts, as ingest does before storing",
        [([{"id": "a1", "text": "我叫张三，电话13912345678"}],
          [{"id": "a1", "text": "我叫某某,电话[手机号]", "spans": [
              {"type": "name", "start": 2, "end": 4}, {"type": "phone", "start": 7, "end": 18}]}])],
        "The text comes back as ingest stores it (normalised, masked); spans index the text "
        "as given. Types: phone, landline, id_card, plate, bank_card, email, name.",
    )
    add_batch_command(
        sub, "analyse", "urgency, sentiment, repeat complaint and content flags of texts, as "
        "ingest",
        [([{"id": "a1", "text": "第三次反映了，燃气泄漏没人管！", "channel": "hotline_12345"}],
          [{"id": "a1", "urgency": "critical", "sentiment": "negative",
            "repeat_complaint": True, "flags": []}])],
        "Urgency uses the domain file's levels; flags name abusive or sensitive content found.",
    )

    add_batch_command(
        sub, "score", "dispatch decisions for reports, as the live agent decides them",
        [([{"id": "r1", "text": "市南区香港中路路灯不亮", "channel": "app"}],
          [{"id": "r1", "code": "E02", "unit": "市南区市政设施服务中心", "district": "市南区",
            "street": None, "location_type": "main_road", "confidence": 0.9563, "auto": True,
            "review_reasons": []}])],
        "channel is optional (default other; hotline_12345, app, wechat, web, letter, "
        "grid_inspector); reported_at (ISO 8601 with offset) is optional. Each text goes "
        "through ingest's validation and masking first, as on the stream.",
        models=True,
    )

    p = add_batch_command(
        sub, "merge", "duplicate reports as cases, as the live case stage merges them",
        [([{"id": "a", "text": "市南区香港中路18号门口井盖丢了",
            "time": "2026-11-20T08:05:00+08:00", "channel": "app"},
           {"id": "b", "text": "香港中路18号井盖没了，很危险",
            "time": "2026-11-20T08:40:00+08:00", "channel": "hotline_12345"}],
          [{"id": "a", "case_id": "a"}, {"id": "b", "case_id": "a"}])],
        "Lines in any order; each report is decided as on the stream (ingest, dispatch), "
        "then merged in time order by the live case logic. A case is named after its "
        "first report. ids must be unique; time is ISO 8601 with a UTC offset. The run "
        "spills to a temporary SQLite file, so memory stays flat on any input size.",
        models=True,
    )
    p.add_argument("--workdir", default=None,
                   help="where the temporary spill file goes (default: the system's temp dir)")
    register_similar(sub)
    register_ocr(sub)
    register_detect(sub)

    p = sub.add_parser("bench", help="replay N events and time until all are stored")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--output", default="bench-results/ingest.json")
    return parser


COMMANDS = {
    "topics": cmd_topics,
    "migrate": cmd_migrate,
    "worker": cmd_worker,
    "sample": cmd_sample,
    "replay": cmd_replay,
    "frames": cmd_frames,
    "vision": cmd_vision,
    "users": cmd_users,
    "report": cmd_report,
    "units-feedback": cmd_units_feedback,
    "cases-eval": cmd_cases_eval,
    "mask": cmd_mask,
    "merge": cmd_merge,
    "similar": cmd_similar,
    "ocr": cmd_ocr,
    "detect": cmd_detect,
    "analyse": cmd_analyse,
    "wait": cmd_wait,
    "query": cmd_query,
    "stack": cmd_stack,
    "catalogue": cmd_catalogue,
    "bench": cmd_bench,
    "bench-dispatch": cmd_bench_dispatch,
    "bench-storage": cmd_bench_storage,
    "bench-batch": cmd_bench_batch,
    "bench-vision": cmd_bench_vision,
    "train": cmd_train,
    "eval": cmd_eval,
    "score": cmd_score,
    "eval-check": cmd_eval_check,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args, _settings())


if __name__ == "__main__":
    sys.exit(main())
