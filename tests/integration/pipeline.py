"""Helpers shared by the pipeline tests (imported as ``pipeline``: pytest puts this
folder on the path, as it has no ``__init__.py``)."""

from __future__ import annotations

from typing import Any

import orjson

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
