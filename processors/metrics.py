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
        # --- dispatch ---
        self.decisions = Counter(
            "citystream_dispatch_decisions",
            "Dispatch decisions published, per outcome (auto / review) and backend",
            ["outcome", "backend"],
            registry=r,
        )
        self.review_reasons = Counter(
            "citystream_dispatch_review_reasons",
            "Why decisions went to the review queue",
            ["reason"],
            registry=r,
        )
        self.dispatch_skipped = Counter(
            "citystream_dispatch_skipped",
            "Input messages the dispatch stage could not read (the sink dead-letters them)",
            ["topic"],
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "citystream_dispatch_latency_seconds",
            "From the broker accepting a report to its decision being published",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dispatch_step_seconds = Histogram(
            "citystream_dispatch_step_seconds",
            "Time per dispatch step for one micro-batch",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dispatch_batch_size = Histogram(
            "citystream_dispatch_batch_size",
            "Reports per dispatch micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.dispatch_confidence = Histogram(
            "citystream_dispatch_confidence",
            "Calibrated confidence of decisions",
            buckets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0),
            registry=r,
        )
        self.inference_fallbacks = Counter(
            "citystream_inference_fallbacks",
            "Model calls answered by the in-process fallback because Triton failed",
            registry=r,
        )
        self.inference_failures = Counter(
            "citystream_inference_failures",
            "Model calls no backend answered (those reports went to review)",
            registry=r,
        )
        self.model_seconds = Histogram(
            "citystream_model_seconds",
            "One model call on a batch (both models are called per batch), by model, "
            "version and the backend that answered",
            ["model", "version", "backend"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.model_errors = Counter(
            "citystream_model_errors",
            "Model calls that failed on every backend, by model and version",
            ["model", "version"],
            registry=r,
        )
        self.inference_retries = Counter(
            "citystream_inference_retries",
            "Retries of Triton requests after a transient failure, by request",
            ["request"],
            registry=r,
        )

        self.case_links = Counter(
            "citystream_case_links",
            "Reports linked to a case, by outcome (opened, merged, relinked)",
            ["outcome"],
            registry=r,
        )
        self.case_rebuild_decisions = Counter(
            "citystream_case_rebuild_decisions",
            "Decisions read back to rebuild the open cases after a (re)assignment",
            registry=r,
        )
        self.hotspots_raised = Counter(
            "citystream_hotspots_raised",
            "Hotspot alerts raised (or raised again with more cases)",
            registry=r,
        )

    def observe_model_call(
        self, model: str, version: str, backend: str, seconds: float, failed: bool
    ) -> None:
        if failed:
            self.model_errors.labels(model, version).inc()
        else:
            self.model_seconds.labels(model, version, backend).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
