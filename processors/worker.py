"""The Faust worker: thin adapters between Kafka and the pure processors.

The ingest agent takes micro-batches *without* acknowledging them (``noack_take``),
runs the pure ``ingest`` on each message, makes the batch durable (ClickHouse rows,
dead letters stored and published) and only then acks the events, so Faust commits
offsets only for messages whose results are stored. If the process dies in between,
the messages come again and the ReplacingMergeTree tables absorb the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import EventT, StreamT
from kafka.errors import KafkaError

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
from streams.codecs import encode_json
from streams.kafka_admin import LagProbe
from streams.query import QueryRefused, read_only
from streams.settings import Settings
from streams.topics import DEAD_LETTERS, INGEST_SOURCES, kinds_by_topic

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    settings: Settings
    context: IngestContext
    sink: ClickHouseSink
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    assigned: bool = False


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    servers = ";".join(f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(","))
    options: dict[str, Any] = {"broker": servers}
    protocol = settings.kafka_security_protocol
    # Our own context: faust's SSLCredentials without a purpose fails, and no CA file
    # means the system's trust store, as with the kafka-python clients.
    tls = (
        ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        )
        if protocol in ("SSL", "SASL_SSL")
        else None
    )
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


def process_safely(msg: SourceMessage, ctx: IngestContext, now: datetime) -> StoredRow | DeadLetter:
    """``ingest``, with a processor bug turned into a dead letter instead of a stalled agent."""
    try:
        return ingest(msg, ctx, now)
    except Exception as exc:  # noqa: BLE001 - any bug: keep the message, with the traceback
        log.exception("ingest failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        return DeadLetter(
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            error_kind=ErrorKind.PROCESSING_ERROR,
            reason="".join(traceback.format_exception_only(exc)).strip()[:2000],
            original=msg.value or b"",
            key=msg.key,
            failed_at=now,
            processor="ingest",
        )


def create_app(state: WorkerState) -> faust.App:
    settings = state.settings
    app = faust.App(
        settings.consumer_group,
        **faust_broker_options(settings),
        store="memory://",
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
    sources = app.topic(*(settings.topic(s.name) for s in INGEST_SOURCES))
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

    async def store_batch(stream: StreamT, events: list[EventT]) -> None:
        now = datetime.now(UTC)
        outcomes = []
        for event in events:
            msg = _source_message(event)
            metrics.events_in.labels(msg.topic).inc()
            outcomes.append(process_safely(msg, state.context, now))
        batch = group_outcomes(outcomes)
        await state.sink.write(batch.rows_by_table)
        await publish_dead_letters(batch.dead_letters)
        stored_at = datetime.now(UTC)
        for outcome in outcomes:
            if isinstance(outcome, StoredRow):
                metrics.events_out.labels(outcome.table).inc()
                latency = (
                    outcome.row["ingest_latency_ms"] / 1000 + (stored_at - now).total_seconds()
                )
                metrics.ingest_latency.labels(outcome.row["kafka_topic"]).observe(max(latency, 0.0))
        for event in events:
            await stream.ack(event)

    @app.agent(sources, name="ingest")
    async def ingest_agent(stream: StreamT) -> None:
        try:
            async for events in stream.noack_take(
                settings.sink_batch_size, within=settings.sink_flush_interval_s
            ):
                await store_batch(stream, events)
        except Exception as exc:  # noqa: BLE001 - see below
            # A failed agent would leave the worker up but consuming nothing. The batch is
            # not acked, so crash the worker: a supervisor restarts it and the batch comes again.
            log.critical("ingest agent failed, stopping the worker: %r", exc)
            await app.crash(exc)
            raise

    # One probe, kept open and used from one thread: a fresh consumer per poll would
    # bootstrap and find the group coordinator again every few seconds.
    lag_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lag-probe")
    lag_probe: list[LagProbe] = []

    def read_lag() -> dict[Any, int]:
        if not lag_probe:
            topics = [settings.topic(s.name) for s in INGEST_SOURCES]
            lag_probe.append(LagProbe(settings, settings.consumer_group, topics))
        try:
            return lag_probe[0].lag()
        except KafkaError:
            lag_probe.pop().close()  # reconnect on the next poll
            raise

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

    @app.page("/query")
    async def query_page(web: Any, request: Any) -> Any:
        sql = request.query.get("sql", "")
        try:
            statement = read_only(sql)
        except QueryRefused as exc:
            return web.json({"error": str(exc)}, status=400)
        try:
            result = await state.sink.query(statement)
        except Exception as exc:  # noqa: BLE001 - any query error goes back to the caller
            return web.json({"error": str(exc)}, status=400)
        return web.json({"columns": result.columns, "types": result.types, "rows": result.rows})

    return app


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
    return WorkerState(settings=settings, context=context, sink=sink, metrics=metrics)
