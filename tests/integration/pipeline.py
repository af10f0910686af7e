"""Helpers shared by the pipeline tests (imported as ``pipeline``: pytest puts this
folder on the path, as it has no ``__init__.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from infra.services import free_port
from streams.kafka_admin import create_topics, producer
from streams.replay import replay
from streams.settings import Settings


def replay_records(settings: Settings, records: list[Any]) -> None:
    """Create the topics and send the records where ``citystream replay`` would."""
    create_topics(settings)
    lines = ((n, orjson.dumps(r)) for n, r in enumerate(records, start=1))
    prod = producer(settings)
    try:
        report = replay(settings, prod, lines, rate=None)
    finally:
        prod.close()
    assert report.ok and report.sent == len(records), report


def isolated_settings(bootstrap: str, root: Path, unique: str, models: Any) -> Settings:
    """Settings for one test (or module): own topics, group, database, chDB path, web
    port; dispatch on the session's trained models, in-process unless Triton is added."""
    return Settings(
        model_repository=models.repository,
        dispatch_policy=models.policy,
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"t{unique}.",
        consumer_group=f"g{unique}",
        clickhouse_database=f"db_{unique}",
        chdb_path=root / "chdb",
        var_dir=root / "var",
        web_port=free_port(),
        topic_partitions=3,
        sink_batch_size=500,
        sink_flush_interval_s=0.2,
        lag_poll_interval_s=1.0,
        kafka_session_timeout_s=6.0,
    )


class _Checkable(Protocol):
    def check(self) -> None: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=_Checkable)


def checked(model: C) -> Iterator[C]:
    """For a fixture to ``yield from``: a detector or reader checked against the model it
    must serve, then closed when its scope ends."""
    try:
        model.check()
        yield model
    finally:
        model.close()


def started_triton(home: Path, repository: Path) -> Any:
    """A tritonserver on free ports serving ``repository`` (stop it when done)."""
    from infra.services import free_ports
    from infra.triton import TritonServer
    from streams.settings import REPO_ROOT

    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(home, repository, http_port, grpc_port, metrics_port,
                          REPO_ROOT / ".cache")
    server.env.ensure()
    server.start(timeout_s=90)
    return server
