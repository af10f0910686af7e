"""infra.services starts, reuses and stops the real servers (tmp homes, free ports)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.services import (
    CLICKHOUSE_BINARY,
    ClickHouseServer,
    KafkaBroker,
    free_ports,
)
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _print_log_tail(path: Path, lines: int = 60) -> None:
    # Captured output is only shown by pytest when the test fails: exactly when it helps.
    if path.is_file():
        print(f"--- {path} ---")
        print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("java/mvn missing: apt-get install openjdk-17-jdk-headless maven")
    # Shared jar cache so the test does not download 55 MB each run; the home is throwaway.
    port, controller_port = free_ports(2)
    kafka = KafkaBroker(tmp_path / "kafka", Settings().cache_dir, port, controller_port)
    try:
        yield kafka
    finally:
        kafka.stop()
        _print_log_tail(kafka.log_file)


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouseServer]:
    if shutil.which("clickhouse-server") is None and not CLICKHOUSE_BINARY.exists():
        pytest.skip("apt-get install clickhouse-server")
    tcp_port, http_port = free_ports(2)
    server = ClickHouseServer(tmp_path / "ch", tcp_port, http_port)
    try:
        yield server
    finally:
        server.stop()
        _print_log_tail(server.log_file)


def test_kafka_start_reuse_stop(broker: KafkaBroker) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    assert not broker.is_running()
    broker.start()
    assert broker.is_running()
    pid = broker.pid()
    assert broker.log_file.is_file()

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic("probe", num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send("probe", b"hello").get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(
        "probe",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        # next(): iterating to the end would wait out consumer_timeout_ms.
        assert next(iter(consumer)).value == b"hello"
    finally:
        consumer.close()

    # Same home again (e.g. a second `make run`): reuse, no restart.
    again = KafkaBroker(
        broker.home, broker.cache_dir, port=broker.port, controller_port=broker.controller_port
    )
    started = time.monotonic()
    again.start()
    assert again.pid() == pid
    assert time.monotonic() - started < 5

    # The jar cache is not fetched twice.
    assert broker.fetch() == broker.libs_dir

    broker.stop()
    assert not broker.is_running()
    assert not broker.pid_file.exists()
    broker.stop()  # no-op when stopped


def test_clickhouse_start_reuse_stop(clickhouse: ClickHouseServer) -> None:
    from clickhouse_driver import Client

    assert not clickhouse.is_running()
    clickhouse.start()
    assert clickhouse.is_running()
    pid = clickhouse.pid()

    client = Client.from_url(clickhouse.url)
    try:
        assert client.execute("SELECT 1") == [(1,)]
        # 18.16 reports the zone it resolved UTC to.
        assert client.execute("SELECT timezone()")[0][0] in {"UTC", "Etc/UTC"}
    finally:
        client.disconnect()

    again = ClickHouseServer(clickhouse.home, clickhouse.tcp_port, clickhouse.http_port)
    again.start()
    assert again.pid() == pid

    clickhouse.stop()
    assert not clickhouse.is_running()
    assert not clickhouse.pid_file.exists()
    clickhouse.stop()
