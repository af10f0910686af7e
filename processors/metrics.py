"""Prometheus metrics of the ingest worker, on a registry of its own (no global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter(
            "citystream_events_in", "Messages read, per source topic", ["topic"], registry=r
        )
        self.events_out = Counter(
            "citystream_events_out", "Rows stored in ClickHouse, per table", ["table"], registry=r
        )
        self.dead_letters = Counter(
            "citystream_dead_letters",
            "Messages sent to the dead-letter topic, per source topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.sink_batch_rows = Histogram(
            "citystream_sink_batch_rows",
            "Rows per ClickHouse insert",
            ["table"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.sink_flush_seconds = Histogram(
            "citystream_sink_flush_seconds",
            "Time to make one micro-batch durable (inserts and dead letters)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sink_errors = Counter(
            "citystream_sink_errors", "Failed insert attempts (retried)", ["table"], registry=r
        )
        self.ingest_latency = Histogram(
            "citystream_ingest_latency_seconds",
            "From the broker accepting a message to its row being stored",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "citystream_consumer_lag",
            "Messages not yet committed by the ingest group",
            ["topic", "partition"],
            registry=r,
        )
        self.sink_healthy = Gauge(
            "citystream_sink_healthy", "1 while the last ClickHouse flush succeeded", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
