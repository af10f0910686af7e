"""kafka-python clients built from the settings: admin (topics, lag) and producers."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.settings import Settings
from streams.topics import CATALOGUE, TopicSpec, topic_configs


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by every kafka-python client."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
        "client_id": "citystream",
    }
    if settings.kafka_sasl_mechanism:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        config["sasl_plain_password"] = password.get_secret_value() if password else None
    if settings.kafka_ssl_cafile:
        config["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return config


def admin_client(settings: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    """An admin client; waits up to ``timeout_s`` for a broker that is still starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(**client_config(settings), request_timeout_ms=15000)
        except KafkaError:  # no broker answers yet (NoBrokersAvailable and kin)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    options: dict[str, Any] = {
        **client_config(settings),
        # Delivery confirmation from all in-sync replicas, and retries that cannot reorder.
        "acks": "all",
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
        "max_request_size": 4 * 1024 * 1024,
    }
    options.update(overrides)
    return KafkaProducer(**options)


def create_topics(
    settings: Settings, specs: Iterable[TopicSpec] = CATALOGUE
) -> tuple[list[str], list[str]]:
    """Create the catalogue's topics; existing ones are left alone. Returns (created, existing)."""
    admin = admin_client(settings)
    try:
        present = set(admin.list_topics())
        created: list[str] = []
        existing: list[str] = []
        for spec in specs:
            name = settings.topic(spec.name)
            if name in present:
                existing.append(name)
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs=topic_configs(spec),
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                existing.append(name)  # created concurrently by another process
        return created, existing
    finally:
        admin.close()


class LagProbe:
    """Reads a group's lag: end offset minus committed offset, per partition.

    One long-lived consumer that names the group but never subscribes, so it reads the
    group's commits without joining it. Not thread-safe: use it from one thread at a time.
    """

    def __init__(self, settings: Settings, group: str, topics: Iterable[str]) -> None:
        self._topics = list(topics)
        self._consumer = KafkaConsumer(
            **client_config(settings), group_id=group, enable_auto_commit=False
        )

    def lag(self) -> dict[TopicPartition, int]:
        """Uncommitted partitions count from their first offset (the whole log is to do)."""
        partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return {}
        ends = self._consumer.end_offsets(partitions)
        begins = self._consumer.beginning_offsets(partitions)
        lag: dict[TopicPartition, int] = {}
        for tp in partitions:
            committed = self._consumer.committed(tp)
            done = committed if committed is not None else begins[tp]
            lag[tp] = max(ends[tp] - done, 0)
        return lag

    def close(self) -> None:
        self._consumer.close()


def consumer_lag(
    settings: Settings, group: str, topics: Iterable[str]
) -> dict[TopicPartition, int]:
    """One reading of a group's lag (opens and closes a probe)."""
    probe = LagProbe(settings, group, topics)
    try:
        return probe.lag()
    finally:
        probe.close()


def wait_for_zero_lag(
    settings: Settings, group: str, topics: Iterable[str], timeout_s: float
) -> dict[TopicPartition, int]:
    """Poll until the group has committed everything on ``topics``; return the last lag seen."""
    deadline = time.monotonic() + timeout_s
    lag: dict[TopicPartition, int] = {}
    probe = LagProbe(settings, group, topics)
    try:
        while time.monotonic() < deadline:
            try:
                lag = probe.lag()
            except KafkaError:
                lag = {}  # a broker hiccup: read again
            if lag and sum(lag.values()) == 0:
                return lag
            time.sleep(0.5)
    finally:
        probe.close()
    raise TimeoutError(f"group {group} still has lag after {timeout_s}s: {lag}")


def wait_until_stored(settings: Settings, timeout_s: float) -> None:
    """Until every message on the stored topics is in ClickHouse (zero lag for each of the
    worker's groups, in order: inputs, then the decisions they produced)."""
    from streams.topics import stored_groups

    deadline = time.monotonic() + timeout_s
    for group, topics in stored_groups(settings).items():
        wait_for_zero_lag(settings, group, topics, max(deadline - time.monotonic(), 1.0))
