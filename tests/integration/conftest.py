"""Real services for integration tests: one Kafka broker and one clickhouse-server per
session, started by the project's own ``infra.services``; every test gets its own
topics, consumer group, database and chDB path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pipeline import isolated_settings, started_triton

from infra.services import ClickHouseServer, KafkaBroker, free_ports
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


@dataclass(frozen=True)
class TrainedModels:
    repository: Path
    policy: Path


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    """Dispatch models and the case embedder trained by ``models.train`` on a small
    simulated history: the real training, export and repository code (what ``make train``
    runs), sized for a test session."""
    from models.embedding.train import EmbedderTrainingConfig
    from models.train import TrainingConfig, train
    from schemas.domain import Domain

    root = tmp_path_factory.mktemp("dispatch-models")
    models = TrainedModels(root / "repository", root / "dispatch_policy.json")
    train(
        Domain.load(Settings().domain_file),
        models.repository,
        models.policy,
        TrainingConfig(records=4000, seed=4242),
        log=lambda _line: None,
        embedder=EmbedderTrainingConfig(records=2000, epochs=1),
    )
    return models


@pytest.fixture(scope="session")
def dispatch_triton(
    tmp_path_factory: pytest.TempPathFactory, trained_models: TrainedModels
) -> Iterator[Any]:
    """tritonserver serving the trained dispatch models."""
    server = started_triton(tmp_path_factory.mktemp("dispatch-triton"), trained_models.repository)
    yield server
    server.stop()


@pytest.fixture
def settings(
    kafka: KafkaBroker, tmp_path: Path, unique: str, trained_models: TrainedModels
) -> Settings:
    """Settings isolated for one test (see pipeline.isolated_settings)."""
    return isolated_settings(kafka.bootstrap, tmp_path, unique, trained_models)


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


# --------------------------------------------------------------------------------- Triton


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with two random-weight text models built by models.export."""
    import numpy as np

    from models.export import build_text_model, save_text_model
    from models.repository import write_model_repository

    tmp = tmp_path_factory.mktemp("triton-models")
    rng = np.random.default_rng(20240601)
    paths = []
    for name, classes in (("event_classifier", 45), ("dispatch_router", 20)):
        model = build_text_model(
            name=name,
            version=f"{name}-test-1",
            weights=rng.normal(0, 2, (2**16, classes)).astype(np.float32),
            bias=rng.normal(0, 1, classes).astype(np.float32),
            temperature=1.3,
            labels=[f"{name}_{i}" for i in range(classes)],
            sequence_length=1024,
        )
        paths.append(save_text_model(model, tmp / "onnx" / f"{name}.onnx"))
    write_model_repository(tmp / "repository", paths)
    return tmp / "repository"


@pytest.fixture(scope="module")
def vision_triton(
    tmp_path_factory: pytest.TempPathFactory, vision_repository: Path
) -> Iterator[Any]:
    """tritonserver serving the test module's ``vision_repository``: each vision test
    module defines that fixture (module scope) with the models it builds and places."""
    server = started_triton(tmp_path_factory.mktemp("vision-triton"), vision_repository)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, triton_repository: Path) -> Iterator[Any]:
    """tritonserver (pytriton's 2.51 build, Python backend, CPU) from infra.triton."""
    from infra.triton import TritonServer

    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(
        tmp_path_factory.mktemp("triton"),
        triton_repository,
        http_port,
        grpc_port,
        metrics_port,
        REPO_ROOT / ".cache",
    )
    server.env.ensure()  # first run only: a few minutes of pip, outside the start timeout
    server.start(timeout_s=90)
    yield server
    server.stop()


# ------------------------------------------------ tests that store rows through ingest


@pytest.fixture(scope="module")
def ctx() -> Any:
    """The ingest context tests store decisions and verdicts through (no topic prefix)."""
    from processors.ingest import IngestContext
    from schemas.domain import Domain
    from streams.topics import kinds_by_topic

    settings = Settings(topic_prefix="")
    return IngestContext(
        domain=Domain.load(settings.domain_file),
        kinds_by_topic=kinds_by_topic(settings),
        max_text_chars=settings.max_text_chars,
        max_message_bytes=settings.max_message_bytes,
    )


@pytest.fixture(params=["chdb", "server"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[Any]:
    """A fresh database on each engine: chDB in a temporary directory, and the session's
    clickhouse-server 18.16."""
    from streams.clickhouse import ChdbWarehouse, ServerWarehouse

    if request.param == "chdb":
        wh = ChdbWarehouse(tmp_path / "chdb", f"w_{unique}")
    else:
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        wh = ServerWarehouse(server.url, f"w_{unique}")
    yield wh
    wh.close()
