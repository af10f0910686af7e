"""Real services for integration tests: one Kafka broker and one clickhouse-server per
session, started by the project's own ``infra.services``; every test gets its own
topics, consumer group, database and chDB path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.services import ClickHouseServer, KafkaBroker, free_port
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(
        tmp_path_factory.mktemp("kafka"),
        REPO_ROOT / ".cache",
        port=free_port(),
        controller_port=free_port(),
    )
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(
        tmp_path_factory.mktemp("clickhouse"), tcp_port=free_port(), http_port=free_port()
    )
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


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSTREAM_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"CITYSTREAM_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """``citystream worker`` as a child process, as it runs in production."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.get_json("/readyz", ok_only=False).get("ready"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {timeout_s}s:\n{self.log_tail()}")

    def url(self, path: str) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}{path}"

    def get_json(self, path: str, ok_only: bool = True) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if ok_only:
                raise AssertionError(f"{path}: HTTP {exc.code} {exc.read()[:500]!r}") from exc
            return json.load(exc)
        except (urllib.error.URLError, ConnectionError):
            if ok_only:
                raise
            return {}

    def query(self, sql: str) -> list[dict[str, Any]]:
        doc = self.get_json("/query?" + urllib.parse.urlencode({"sql": sql}))
        return [dict(zip(doc["columns"], row, strict=True)) for row in doc["rows"]]

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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
