"""The Faust worker: thin adapters between Kafka and the pure processors.

The ingest agent takes micro-batches *without* acknowledging them (``noack_take``),
runs the pure ``ingest`` on each message, makes the batch durable (ClickHouse rows,
dead letters stored and published) and only then acks the events, so Faust commits
offsets only for messages whose results are stored. If the process dies in between,
the messages come again and the ReplacingMergeTree tables absorb the repeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import ssl
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import EventT, StreamT
from kafka.errors import KafkaError

from processors.dispatch import (
    DispatchDecision,
    Dispatcher,
    DispatchPolicy,
    DispatchRequest,
    read_request,
)
from processors.ingest import (
    DeadLetter,
    IngestContext,
    SourceMessage,
    StoredRow,
    group_outcomes,
    ingest,
)
from processors.metrics import IngestMetrics
from processors.sink import ClickHouseSink
from schemas.domain import Domain
from schemas.errors import ErrorKind
from schemas.records import DispatchFeedback, to_wire
from streams.codecs import encode_json
from streams.kafka_admin import LagProbe
from streams.settings import Settings
from streams.topics import (
    AGENT_TOPICS,
    DEAD_LETTERS,
    DECISION_STORE_TOPICS,
    DISPATCH_CASES,
    DISPATCH_FEEDBACK,
    DISPATCH_ORDERS,
    DISPATCH_OUTPUTS,
    DISPATCH_REVIEW,
    DISPATCH_SOURCES,
    HOTSPOTS,
    cases_group,
    decisions_group,
    kinds_by_topic,
    message_key,
    stored_groups,
)

log = logging.getLogger(__name__)


@dataclass
class DispatchStage:
    """The dispatch agent's half of the worker: decisions are computed on threads of
    their own (one per actor) so address analysis and model calls never block the loop."""

    dispatcher: Dispatcher
    executor: ThreadPoolExecutor
    # Ingest's validation and masking without the appeal analysis (the ingest agent
    # does that once, for storage).
    context: IngestContext


@dataclass
class DispatchPressure:
    """Whether dispatch is behind: its latest reports waited in Kafka longer than
    ``threshold_s``. Work that may lag (case links, embeddings) waits meanwhile."""

    threshold_s: float = 0.1
    hold_s: float = 0.5
    behind_until: float = 0.0

    def observe(self, waited_s: float) -> None:
        if waited_s > self.threshold_s:
            self.behind_until = time.monotonic() + self.hold_s

    def behind(self) -> bool:
        return time.monotonic() < self.behind_until


@dataclass
class WorkerState:
    settings: Settings
    context: IngestContext
    sink: ClickHouseSink
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    assigned: bool = False
    dispatch: DispatchStage | None = None
    # Embeds each decided report for similar-case search (None: not stored).
    case_embedder: Any = None
    pressure: DispatchPressure = field(default_factory=DispatchPressure)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    # Our own context: faust's SSLCredentials without a purpose fails, and no CA file
    # means the system's trust store, as with the kafka-python clients.
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
    )


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """The same connection settings for a plain aiokafka client."""
    password = settings.kafka_sasl_password
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": _tls_context(settings),
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return options


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    servers = ";".join(f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(","))
    options: dict[str, Any] = {"broker": servers}
    protocol = settings.kafka_security_protocol
    tls = _tls_context(settings)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=tls,
        )
    elif tls is not None:
        options["broker_credentials"] = faust.SSLCredentials(context=tls)
    return options


def _source_message(event: EventT) -> SourceMessage:
    msg = event.message
    return SourceMessage(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp=datetime.fromtimestamp(msg.timestamp, UTC),
        key=msg.key,
        value=msg.value,
    )


def processing_dead_letter(
    msg: SourceMessage, exc: Exception, processor: str, now: datetime
) -> DeadLetter:
    """A processor's bug as data: the message, kept with the traceback's last line."""
    return DeadLetter(
        source_topic=msg.topic,
        source_partition=msg.partition,
        source_offset=msg.offset,
        error_kind=ErrorKind.PROCESSING_ERROR,
        reason="".join(traceback.format_exception_only(exc)).strip()[:2000],
        original=msg.value or b"",
        key=msg.key,
        failed_at=now,
        processor=processor,
    )


def process_safely(msg: SourceMessage, ctx: IngestContext, now: datetime) -> StoredRow | DeadLetter:
    """``ingest``, with a processor bug turned into a dead letter instead of a stalled agent."""
    try:
        return ingest(msg, ctx, now)
    except Exception as exc:  # noqa: BLE001 - any bug: keep the message, with the traceback
        log.exception("ingest failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        return processing_dead_letter(msg, exc, "ingest", now)


async def send_record(app: faust.App, topic: str, spec: Any, record: Any) -> Awaitable[Any]:
    """Hand a record to the producer, keyed as its topic's catalogue says; returns the
    delivery to await. Straight to the producer: Faust's Topic.send adds per-message work
    (futures, callbacks) that showed in profiles at hundreds of decisions a second."""
    wire = to_wire(record)
    return await app.producer.send(
        topic, message_key(spec, wire), encode_json(wire), None, None, None
    )


async def crash_on_failure(app: faust.App, name: str, work: Awaitable[None]) -> None:
    """Run a long-lived task; if it fails, crash the worker rather than idle with its
    offsets behind (a supervisor restarts it and the uncommitted work comes again)."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure: crash, never idle
        log.critical("%s failed, stopping the worker: %r", name, exc)
        await app.crash(exc)
        raise


async def run_batches(
    app: faust.App,
    stream: StreamT,
    agent: str,
    size: int,
    within: float,
    handle: Callable[[StreamT, list[EventT]], Awaitable[None]],
) -> None:
    """Feed an agent micro-batches it acks itself (``noack_take``: Faust's ``take`` acks in
    a ``finally``, even when the handler fails).

    A failed agent would leave the worker up but consuming nothing. The batch is not acked,
    so crash the worker: a supervisor restarts it and the batch comes again."""

    async def batches() -> None:
        async for events in stream.noack_take(size, within=within):
            await handle(stream, events)

    await crash_on_failure(app, f"{agent} agent", batches())


async def run_decision_store(
    settings: Settings,
    store: Callable[[list[SourceMessage]], Awaitable[None]],
) -> None:
    """Decisions into ClickHouse through a plain consumer (the sink's bulk path, as in
    quix-streams): take what arrived, make it durable, then commit exactly those offsets.
    A crash between the two repeats the batch; the table keeps one row per report."""
    from processors.case_stage import commit_fetched, group_consumer

    consumer = group_consumer(
        decisions_group(settings), settings.kafka_session_timeout_s, aiokafka_options(settings),
        *(settings.topic(s.name) for s in DECISION_STORE_TOPICS),
        # Dead letters can carry a whole camera frame.
        max_partition_fetch_bytes=DEAD_LETTERS.max_message_bytes + 64 * 1024,
    )
    try:
        await consumer.start()
        while True:
            fetched = await consumer.getmany(
                timeout_ms=int(settings.sink_flush_interval_s * 1000),
                max_records=settings.sink_batch_size,
            )
            messages = [
                SourceMessage(
                    m.topic, m.partition, m.offset,
                    datetime.fromtimestamp(m.timestamp / 1000, UTC), m.key, m.value,
                )
                for batch in fetched.values()
                for m in batch
            ]
            if not messages:
                continue
            await store(messages)
            await commit_fetched(consumer, fetched, "decision")
    finally:
        await consumer.stop()


def create_app(state: WorkerState) -> faust.App:
    settings = state.settings
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.consumer_group,
        **faust_broker_options(settings),
        store="memory://",
        # Faust's own data dir (default: ./<app id>-data in the working directory).
        datadir=str(settings.var_dir / "faust"),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Commit acknowledged offsets often: a restart then repeats little work.
        broker_commit_interval=1.0,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 10,
    )
    sources = app.topic(*(settings.topic(s.name) for s in AGENT_TOPICS))
    dead_letters = app.topic(settings.topic(DEAD_LETTERS.name))
    metrics = state.metrics

    async def publish_dead_letters(batch_dead: list[DeadLetter]) -> None:
        pending = []
        for dl in batch_dead:
            metrics.dead_letters.labels(dl.source_topic, str(dl.error_kind)).inc()
            log.warning(
                "dead letter %s[%d]@%d %s: %s",
                dl.source_topic,
                dl.source_partition,
                dl.source_offset,
                dl.error_kind,
                dl.reason,
            )
            fut = await dead_letters.send(
                key=dl.source_topic.encode(), value=encode_json(dl.to_wire())
            )
            pending.append(fut)
        # Delivery confirmed before the source offsets may be acked.
        await asyncio.gather(*pending)

    ingest_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")

    async def store_batch(stream: StreamT, events: list[EventT]) -> None:
        await store_messages([_source_message(event) for event in events])
        for event in events:
            await stream.ack(event)

    async def store_messages(messages: list[SourceMessage]) -> None:
        """Make a batch durable: rows inserted, dead letters delivered."""
        now = datetime.now(UTC)
        for msg in messages:
            metrics.events_in.labels(msg.topic).inc()
        # Validation, masking and appeal analysis on a thread of their own: the event loop
        # stays free for the dispatch agent's deliveries and the web pages.
        outcomes = await asyncio.get_running_loop().run_in_executor(
            ingest_thread, lambda: [process_safely(m, state.context, now) for m in messages]
        )
        batch = group_outcomes(outcomes)
        await state.sink.write(batch.rows_by_table)
        await publish_dead_letters(batch.dead_letters)
        stored_at = datetime.now(UTC)
        for outcome in outcomes:
            if isinstance(outcome, StoredRow):
                metrics.events_out.labels(outcome.table).inc()
                queued_ms = outcome.row.get("ingest_latency_ms")
                if queued_ms is None:  # decisions and feedback: no input latency to report
                    continue
                latency = queued_ms / 1000 + (stored_at - now).total_seconds()
                metrics.ingest_latency.labels(outcome.row["kafka_topic"]).observe(max(latency, 0.0))

    @app.agent(sources, name="ingest")
    async def ingest_agent(stream: StreamT) -> None:
        await run_batches(
            app, stream, "ingest", settings.sink_batch_size, settings.sink_flush_interval_s,
            store_batch,
        )

    if state.dispatch is not None:
        add_dispatch_agent(app, state, state.dispatch, publish_dead_letters)

    @app.task
    async def store_decisions() -> None:
        await crash_on_failure(
            app, "decision store", run_decision_store(settings, store_messages)
        )

    # One probe, kept open and used from one thread: a fresh consumer per poll would
    # bootstrap and find the group coordinator again every few seconds.
    lag_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lag-probe")
    lag_probes: list[LagProbe] = []

    def read_lag() -> dict[Any, int]:
        if not lag_probes:
            for group, topics in stored_groups(settings).items():
                lag_probes.append(LagProbe(settings, group, topics))
        lag: dict[Any, int] = {}
        try:
            for probe in lag_probes:
                lag.update(probe.lag())
        except KafkaError:
            while lag_probes:  # reconnect on the next poll
                lag_probes.pop().close()
            raise
        return lag

    @app.timer(interval=settings.lag_poll_interval_s)
    async def poll_lag() -> None:
        try:
            lag = await asyncio.get_running_loop().run_in_executor(lag_thread, read_lag)
        except Exception as exc:  # noqa: BLE001 - a failed poll must not stop the worker
            log.warning("consumer lag poll failed: %s", exc)
            return
        for tp, value in lag.items():
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(value)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = state.sink.healthy and bool(app.consumer.assignment())
        return web.json(
            {"ready": ready, "sink_healthy": state.sink.healthy},
            status=200 if ready else 503,
        )

    add_web_routes(app, state)
    from processors.dashboard_refresh import add_dashboard_refresh

    add_dashboard_refresh(app, state)  # the embedded engine's dashboards (no views there)
    if settings.cases_enabled:
        add_case_stage(app, state)
    if settings.reports_enabled:
        add_report_timer(app, state)
    return app


def add_case_stage(app: faust.App, state: WorkerState) -> None:
    """Duplicate merging (decisions -> dispatch.cases) and hotspot alerts (-> city.hotspots).
    Both publish through Kafka; the decision store keeps what they publish."""
    from processors.case_stage import run_case_stage
    from processors.cases import CaseLinker
    from processors.hotspots import hotspot_alerts, hotspot_counts_sql, new_alerts, place_days
    from processors.ingest import audit_row
    from processors.merge import CaseIndex, HotspotRule
    from processors.merge_batch import batch_policy
    from processors.similar import (
        EMBEDDINGS_LOG,
        embedding_row,
        moved_embedding_rows,
        moved_embeddings_sql,
    )

    settings, metrics = state.settings, state.metrics
    linker = CaseLinker(CaseIndex(batch_policy(state.context.domain)))
    cases_topic = settings.topic(DISPATCH_CASES.name)
    hotspots_topic = settings.topic(HOTSPOTS.name)

    async def publish(topic: str, spec: Any, records: list[Any]) -> None:
        pending = [await send_record(app, topic, spec, record) for record in records]
        await asyncio.gather(*pending)  # delivered before the offsets are committed

    embed_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="case-embed")

    async def store_embeddings(decisions: list[Any], links: list[Any]) -> None:
        """Each decided report's embedding (and its audit row) into the warehouse, with its
        case; a repeat replaces the row (one per report)."""
        if not decisions:
            return
        embedder = state.case_embedder
        texts = [d.text for _, d in decisions]
        vectors = await asyncio.get_running_loop().run_in_executor(
            embed_thread, embedder.embed, texts
        )
        backend = embedder.last_backend
        case_of = {link.input_id: link.case_id for link in links}
        rows, audit = [], []
        for (msg, decision), vector in zip(decisions, vectors, strict=True):
            rows.append(embedding_row(decision, vector, embedder.version,
                                      case_id=case_of.get(decision.input_id)))
            audit.append(audit_row(
                decision.input_id, embedder.name, embedder.version, decision.text,
                {"dims": len(vector), "sha256": hashlib.sha256(vector.tobytes()).hexdigest()},
                backend, "cases", decision.decided_at,
                {"kafka_topic": msg.topic, "kafka_partition": msg.partition,
                 "kafka_offset": msg.offset},
            ).row)
        # Reports of a case folded into another were linked again: their stored rows move
        # to the new case too (the search keeps one report per case).
        fresh = {d.input_id for _, d in decisions}
        moved = {link.input_id: link.case_id for link in links
                 if link.relinked and link.input_id not in fresh}
        if moved:
            stored = await state.sink.query(moved_embeddings_sql(list(moved)), None)
            rows += moved_embedding_rows(stored.rows, moved)
        await state.sink.write({EMBEDDINGS_LOG: rows, "model_audit_log": audit})

    def counted(links: list[Any]) -> None:
        for link in links:
            outcome = "relinked" if link.relinked else "merged" if link.merged else "opened"
            metrics.case_links.labels(outcome).inc()

    @app.task
    async def link_cases() -> None:
        stage = run_case_stage(
            [settings.topic(s.name) for s in DISPATCH_OUTPUTS],
            cases_group(settings),
            aiokafka_options(settings),
            linker,
            lambda links: publish(cases_topic, DISPATCH_CASES, links),
            batch_size=settings.sink_batch_size,
            flush_interval_s=settings.sink_flush_interval_s,
            session_timeout_s=settings.kafka_session_timeout_s,
            on_batch=counted,
            on_rebuild=metrics.case_rebuild_decisions.inc,
            on_linked=store_embeddings if state.case_embedder is not None else None,
            executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="cases"),
            yield_to=state.pressure.behind,
        )
        await crash_on_failure(app, "case stage", stage)

    rule = HotspotRule(min_cases=settings.hotspot_min_cases, days=settings.hotspot_days)
    raised: dict[str, int] = {}  # hotspot id -> cases it was raised with (a restart repeats)

    @app.timer(interval=settings.hotspot_interval_s)
    async def raise_hotspots() -> None:
        now = datetime.now(UTC)
        try:
            result = await state.sink.query(hotspot_counts_sql(rule, now), None)
        except Exception as exc:  # noqa: BLE001 - a failed poll must not stop the worker
            log.warning("hotspot query failed: %r", exc)
            return
        alerts = new_alerts(hotspot_alerts(place_days(result.rows), now, rule), raised)
        if not alerts:
            return
        await publish(hotspots_topic, HOTSPOTS, alerts)
        for alert in alerts:
            raised[alert.hotspot_id] = alert.cases
            metrics.hotspots_raised.inc()
            log.info("hotspot %s: %d cases", alert.hotspot_id, alert.cases)


def add_report_timer(app: faust.App, state: WorkerState) -> None:
    """The day's report after midnight (the week's on Mondays, the month's on the 1st),
    written by whichever worker runs the timer; a report already on disk is not redone,
    so a restart or a second worker does no harm beyond a repeated check."""
    from processors.content_screen import screen
    from processors.report_run import generate_due_reports
    from web.views import city_labels

    settings = state.settings
    classes = city_labels(state.context.domain)["event_classes"]
    # One report at a time: the chart code sets matplotlib's global state while drawing.
    report_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")

    class SinkQueries:
        def query(self, sql: str, limits: Mapping[str, Any] | None = None) -> Any:
            return state.sink.query_blocking(sql, limits)

    def write_due() -> list[Any]:
        return generate_due_reports(
            SinkQueries(), datetime.now(UTC), screen, settings.reports_path,
            event_classes=classes,
        )

    @app.timer(interval=300)
    async def reports_due() -> None:
        try:
            written = await asyncio.get_running_loop().run_in_executor(report_thread, write_due)
        except Exception as exc:  # noqa: BLE001 - a failed report must not stop the worker
            log.error("periodic report failed: %r", exc)
            return
        for files in written:
            log.info("report written: %s (%.1f s)", files.html_path, files.seconds)


def add_web_routes(app: faust.App, state: WorkerState) -> None:
    """The pages and HTTP endpoints (``web.server``) on Faust's own web server: in the
    embedded mode chDB lives in this process, so this is where queries can run."""
    from processors.dispatch_rule import all_units
    from streams.clickhouse import QueryResult, open_analyst_warehouse
    from web.accounts import AccountStore
    from web.server import WebContext, add_routes
    from web.sessions import SessionSigner, load_session_key

    settings = state.settings
    feedback_topic = settings.topic(DISPATCH_FEEDBACK.name)

    async def publish_feedback(record: DispatchFeedback) -> None:
        # The page hears 202 only once the verdict is in Kafka.
        await (await send_record(app, feedback_topic, DISPATCH_FEEDBACK, record))

    analyst_query = state.sink.query
    analyst = open_analyst_warehouse(settings)
    if analyst is not None:
        # Analysts' SQL on its own connection, as the read-only user under its quota.
        analyst_thread = ThreadPoolExecutor(max_workers=2, thread_name_prefix="analyst-sql")

        async def analyst_query(sql: str, limits: Mapping[str, Any] | None) -> QueryResult:
            return await asyncio.get_running_loop().run_in_executor(
                analyst_thread, analyst.query, sql, limits
            )

    ctx = WebContext(
        settings=settings,
        domain=state.context.domain,
        query=state.sink.query,
        analyst_query=analyst_query,
        publish_feedback=publish_feedback,
        accounts=AccountStore(settings.accounts_path),
        signer=SessionSigner(load_session_key(settings), settings.session_max_age_s),
        units=all_units(state.context.domain),
    )
    add_routes(app.web.web_app, ctx)


def _read_and_decide(
    stage: DispatchStage, messages: list[SourceMessage], arrived: float
) -> tuple[list[DispatchRequest | None], list[DispatchDecision | Exception]]:
    """Each message as a request (None: ingest refuses it and dead-letters it once), then
    the decisions for the readable ones."""
    now = datetime.now(UTC)
    requests: list[DispatchRequest | None] = []
    for msg in messages:
        try:
            requests.append(read_request(msg, stage.context, now))
        except Exception:  # noqa: BLE001 - the ingest agent dead-letters this message
            log.exception("dispatch could not read %s[%d]@%d", msg.topic, msg.partition,
                          msg.offset)
            requests.append(None)
    readable = [r for r in requests if r is not None]
    queued = [
        max(arrived - msg.timestamp.timestamp(), 0.0) * 1000
        for msg, r in zip(messages, requests, strict=True)
        if r is not None
    ]
    return requests, _decide_isolated(stage.dispatcher, readable, queued)


def _decide_isolated(
    dispatcher: Dispatcher, requests: list[DispatchRequest], queued_ms: list[float]
) -> list[DispatchDecision | Exception]:
    """Decide a batch; if that fails on a bug, decide each report alone so one bad report
    becomes one error item instead of stalling its partition."""
    try:
        return list(dispatcher.decide_batch(requests, queued_ms=queued_ms))
    except Exception:  # noqa: BLE001 - isolate the failing report below
        log.exception("dispatch batch failed; deciding its %d reports one by one", len(requests))
    results: list[DispatchDecision | Exception] = []
    for request, queued in zip(requests, queued_ms, strict=True):
        try:
            results.extend(dispatcher.decide_batch([request], queued_ms=[queued]))
        except Exception as exc:  # noqa: BLE001 - becomes a processing_error dead letter
            results.append(exc)
    return results


def add_dispatch_agent(
    app: faust.App,
    state: WorkerState,
    stage: DispatchStage,
    publish_dead_letters: Callable[[list[DeadLetter]], Awaitable[None]],
) -> None:
    """Reports in, decisions out to dispatch.orders (auto) or dispatch.review. Source
    offsets are acked only after every decision of the batch is delivered."""
    settings, metrics = state.settings, state.metrics
    inputs = app.topic(*(settings.topic(s.name) for s in DISPATCH_SOURCES))
    outputs = {
        True: (DISPATCH_ORDERS, settings.topic(DISPATCH_ORDERS.name)),
        False: (DISPATCH_REVIEW, settings.topic(DISPATCH_REVIEW.name)),
    }

    async def dispatch_batch(stream: StreamT, events: list[EventT]) -> None:
        arrived = time.time()
        messages = [_source_message(event) for event in events]
        if messages:
            state.pressure.observe(arrived - min(m.timestamp.timestamp() for m in messages))
        # Reading (validation, masking) and deciding both run on the stage's thread: the
        # event loop stays free for the other agents and the web pages.
        requests, results = await asyncio.get_running_loop().run_in_executor(
            stage.executor, _read_and_decide, stage, messages, arrived
        )
        kept = []
        for event, msg, request in zip(events, messages, requests, strict=True):
            if request is None:
                metrics.dispatch_skipped.labels(msg.topic).inc()
            else:
                kept.append(event)
        metrics.dispatch_batch_size.observe(len(kept))
        pending, failed = [], []
        for event, result in zip(kept, results, strict=True):
            if isinstance(result, Exception):
                failed.append(
                    processing_dead_letter(
                        _source_message(event), result, "dispatch", datetime.now(UTC)
                    )
                )
                continue
            spec, topic = outputs[result.auto]
            pending.append(await send_record(app, topic, spec, result))
        await asyncio.gather(*pending)
        await publish_dead_letters(failed)
        published = time.time()
        for event, result in zip(kept, results, strict=True):
            if isinstance(result, Exception):
                continue
            metrics.decisions.labels("auto" if result.auto else "review", result.backend).inc()
            for reason in result.review_reasons:
                metrics.review_reasons.labels(reason).inc()
            metrics.dispatch_confidence.observe(result.confidence)
            metrics.dispatch_latency.observe(max(published - event.message.timestamp, 0.0))
            if result.backend.startswith("none"):
                metrics.inference_failures.inc()
        if results and not isinstance(results[0], Exception):
            for step in ("address", "features", "inference", "decide"):
                metrics.dispatch_step_seconds.labels(step).observe(
                    results[0].latency_ms.get(step, 0.0) / 1000
                )
        for event in events:
            await stream.ack(event)

    # Several actors, each with its own micro-batches: while one waits for the models or
    # for its decisions' delivery, the next batch is already being read and prepared.
    @app.agent(inputs, name="dispatch", concurrency=settings.dispatch_concurrency)
    async def dispatch_agent(stream: StreamT) -> None:
        await run_batches(
            app, stream, "dispatch", settings.dispatch_batch_size, settings.dispatch_window_s,
            dispatch_batch,
        )


def build_dispatch_stage(
    settings: Settings, domain: Domain, metrics: IngestMetrics, context: IngestContext
) -> DispatchStage:
    executor = ThreadPoolExecutor(
        max_workers=settings.dispatch_concurrency, thread_name_prefix="dispatch"
    )
    from models.scoring import build_scorer
    from processors.address import live_analyser

    policy = DispatchPolicy.load(settings.dispatch_policy, domain)
    scorer = build_scorer(
        settings,
        policy,
        on_fallback=metrics.inference_fallbacks.inc,
        observe=metrics.observe_model_call,
        on_retry=lambda request: metrics.inference_retries.labels(request).inc(),
    )
    return DispatchStage(
        Dispatcher(domain, policy, live_analyser(domain), scorer), executor, context
    )


def build_state(settings: Settings, warehouse: Any) -> WorkerState:
    domain = Domain.load(settings.domain_file)
    metrics = IngestMetrics()
    context = IngestContext(
        domain=domain,
        kinds_by_topic=kinds_by_topic(settings),
        max_text_chars=settings.max_text_chars,
        max_message_bytes=settings.max_message_bytes,
    )
    sink = ClickHouseSink(warehouse, metrics, settings.sink_retry_max_backoff_s)
    dispatch = None
    if settings.dispatch_enabled:
        dispatch = build_dispatch_stage(
            settings, domain, metrics, dataclasses.replace(context, analyse_appeals=False)
        )
    case_embedder = None
    if settings.cases_enabled and settings.similar_cases_enabled:
        from models.embedding.serving import build_case_embedder

        case_embedder = build_case_embedder(
            settings,
            observe=metrics.observe_model_call,
            on_fallback=metrics.inference_fallbacks.inc,
            on_retry=lambda request: metrics.inference_retries.labels(request).inc(),
        )
    return WorkerState(
        settings=settings, context=context, sink=sink, metrics=metrics, dispatch=dispatch,
        case_embedder=case_embedder,
    )
