"""The one settings object: read from the environment once, frozen, passed in.

Every variable is ``CITYSTREAM_<FIELD>`` (upper case). Credentials are
``SecretStr`` so they never show up in logs, reprs or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYSTREAM_", frozen=True, extra="ignore")

    # --- Kafka -----------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    # Prefix for every topic name: isolates environments (and tests) on one cluster.
    topic_prefix: str = ""
    # Consumer group / Faust application id of the ingest worker.
    consumer_group: str = "citystream-ingest"
    # A worker that dies without leaving is noticed after this long; its partitions then
    # move to the others. Shorter: faster failover; longer: fewer rebalances on GC pauses.
    kafka_session_timeout_s: float = Field(default=30.0, ge=3)
    # Partitions for topics we create (existing topics are left as they are).
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)

    # --- ClickHouse ------------------------------------------------------------
    # Unset: the embedded chDB engine on disk at ``chdb_path``.
    # Set (clickhouse://user@host:9000/db): a ClickHouse server over the native protocol.
    clickhouse_url: str | None = None
    clickhouse_password: SecretStr | None = None
    clickhouse_database: str = "citystream"
    # Analysts' SQL (`citystream query`, /query) on a server runs as this read-only user,
    # under its own profile and quota (infra/production/clickhouse). Unset: the app's own
    # limits on the pipeline's connection (the embedded mode always works that way).
    clickhouse_analyst_user: str | None = None
    clickhouse_analyst_password: SecretStr | None = None
    chdb_path: Path | None = None

    # --- Processing ------------------------------------------------------------
    domain_file: Path = REPO_ROOT.parent / "shared" / "domain" / "qingdao.json"
    max_text_chars: int = Field(default=4000, ge=1)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    sink_batch_size: int = Field(default=2000, ge=1)
    sink_flush_interval_s: float = Field(default=0.5, gt=0)
    # Upper bound between retries of a failing ClickHouse insert (backoff doubles up to it).
    sink_retry_max_backoff_s: float = Field(default=10.0, gt=0)
    # Embedded engine only: the dashboards' hourly aggregates are brought up to date this
    # often on the sink's thread (processors/dashboard_refresh.py) instead of by
    # materialized views on every insert (migration 0007). A server keeps its views.
    dashboard_refresh_interval_s: float = Field(default=2.0, gt=0)

    # --- Dispatch ----------------------------------------------------------------
    # Off: the worker only stores (no models needed), e.g. a storage-only deployment.
    dispatch_enabled: bool = True
    # The Triton model repository and the policy written by `make train`.
    model_repository: Path = REPO_ROOT / "models" / "build" / "repository"
    dispatch_policy: Path = REPO_ROOT / "models" / "build" / "dispatch_policy.json"
    # Micro-batches: up to this many reports, or whatever arrived within the window. Small
    # windows keep latency low; Triton's dynamic batcher merges concurrent batches anyway.
    dispatch_batch_size: int = Field(default=64, ge=1, le=64)
    dispatch_window_s: float = Field(default=0.01, gt=0)
    # Dispatch actors (each takes its own micro-batches; offsets still commit in order).
    dispatch_concurrency: int = Field(default=3, ge=1, le=16)
    # Unset: models run in-process (ONNX Runtime). Set (host:port): Triton, with the
    # in-process models as the fallback when it is down or slow.
    triton_url: str | None = None
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(default=0.5, gt=0)
    triton_retries: int = Field(default=1, ge=0)
    # False: a Triton failure is an error, not a switch to the in-process models (the batch
    # tools' --via triton: a run meant to check the served models must not quietly skip them).
    triton_fallback: bool = True
    # ONNX Runtime execution providers, in order (GPU machines: CUDAExecutionProvider first).
    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)

    # --- Analysts' queries (citystream query, /query) ---------------------------
    query_max_rows: int = Field(default=10_000, ge=1)
    query_max_seconds: float = Field(default=30.0, gt=0)

    # --- Access (web pages and HTTP endpoints) ----------------------------------
    # Accounts (roles, Argon2 password hashes, API token hashes); `citystream users`
    # manages them. Unset: <var_dir>/users.json.
    users_file: Path | None = None
    # Signs session cookies. Unset: a random key kept in <var_dir>/session.key (0600);
    # production sets it (several workers must share one).
    session_secret: SecretStr | None = None
    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    # Session cookies only over HTTPS (production sits behind a TLS proxy).
    web_cookie_secure: bool = False
    # The API token `citystream query` sends to a worker. Unset: <var_dir>/api-token, which
    # `citystream users ensure-local` writes for the local stack's analyst.
    api_token: SecretStr | None = None

    # --- Reports -----------------------------------------------------------------
    # Where `citystream report` and the worker's daily timer write them. Unset:
    # <var_dir>/reports.
    report_dir: Path | None = None
    # The worker writes the day's (and on Mondays the week's, on the 1st the month's)
    # report after midnight, Asia/Shanghai.
    reports_enabled: bool = True

    # --- Cases and hotspots ---------------------------------------------------------
    # Duplicate merging on the stream (dispatch.cases) and hotspot alerts (city.hotspots).
    cases_enabled: bool = True
    # --- Vision (citystream vision: frames.raw -> detections, tracks, camera events) ----
    # Whether a vision stage runs (its consumer group counts in `citystream wait`).
    vision_enabled: bool = False
    # One JSON file per camera: id, place, zones, rules (processors/camera_config.py).
    vision_cameras_dir: Path = REPO_ROOT / "infra" / "cameras"
    # Where blurred snapshots are written (the object store; a bucket in production).
    # Unset: <var_dir>/snapshots.
    snapshot_dir: Path | None = None
    # Frames per detector call (across cameras), or whatever arrived within the window.
    vision_batch_size: int = Field(default=8, ge=1, le=16)
    vision_window_s: float = Field(default=0.05, gt=0)
    # How far back a restart reads vision.detections to rebuild the trackers: longer than
    # any rule's dwell plus its cool-down.
    vision_rebuild_s: float = Field(default=900.0, gt=0)
    # Each decided report embedded (models/embedding: case_embedder) and stored in
    # case_embeddings, for the board's similar past cases.
    similar_cases_enabled: bool = True
    # A place with this many cases within this many local days is a hotspot.
    hotspot_min_cases: int = Field(default=3, ge=1)
    hotspot_days: int = Field(default=7, ge=1)
    hotspot_interval_s: float = Field(default=30.0, gt=0)

    # --- Worker ----------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    lag_poll_interval_s: float = Field(default=5.0, gt=0)
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"

    # --- Local stack -------------------------------------------------------------
    # Where the local stack keeps data, logs and pid files; fetched jars go to cache_dir.
    var_dir: Path = REPO_ROOT / "var"
    cache_dir: Path = REPO_ROOT / ".cache"

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "CITYSTREAM_KAFKA_SECURITY_PROTOCOL is SASL_*: set "
                "CITYSTREAM_KAFKA_SASL_MECHANISM, CITYSTREAM_KAFKA_SASL_USERNAME and "
                "CITYSTREAM_KAFKA_SASL_PASSWORD"
            )
        return self

    @property
    def accounts_path(self) -> Path:
        return self.users_file or (self.var_dir / "users.json")

    @property
    def reports_path(self) -> Path:
        return self.report_dir or (self.var_dir / "reports")

    @property
    def chdb_data_path(self) -> Path:
        return self.chdb_path or (self.var_dir / "chdb")

    def topic(self, name: str) -> str:
        """The full topic name for a catalogue name (with this environment's prefix)."""
        return f"{self.topic_prefix}{name}"
