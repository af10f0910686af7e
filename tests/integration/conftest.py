"""Real services for integration tests: one Kafka broker and one clickhouse-server per
session, started by the project's own ``infra.services``; every test gets its own
topics, consumer group, database and chDB path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.services import ClickHouseServer, KafkaBroker, free_port, free_ports
from infra.worker_process import WorkerProcess
from streams.settings import REPO_ROOT, Settings


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    port, controller_port = free_ports(2)
    broker = KafkaBroker(
        tmp_path_factory.mktemp("kafka"), REPO_ROOT / ".cache", port, controller_port
    )
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    tcp_port, http_port = free_ports(2)
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"), tcp_port, http_port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(kafka: KafkaBroker, tmp_path: Path, unique: str) -> Settings:
    """Settings isolated for one test: own topics, group, database, chDB path, web port."""
    return Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        topic_prefix=f"t{unique}.",
        consumer_group=f"g{unique}",
        clickhouse_database=f"db_{unique}",
        chdb_path=tmp_path / "chdb",
        var_dir=tmp_path / "var",
        web_port=free_port(),
        topic_partitions=3,
        sink_batch_size=500,
        sink_flush_interval_s=0.2,
        lag_poll_interval_s=1.0,
        kafka_session_timeout_s=6.0,
    )


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def make(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()
