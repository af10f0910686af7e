"""Replay a JSON Lines file into the input topics, keyed, paced, with delivery confirmation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.settings import Settings
from streams.topics import TopicSpec, message_key, spec_for_kind


@dataclass
class ReplayReport:
    sent: int = 0
    confirmed: int = 0
    failed: int = 0
    # (line number, reason) of lines that could not be routed to a topic.
    unroutable: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    # Why the first delivery (or the final flush) failed, for the person running it.
    first_error: str | None = None
    flushed: bool = False

    @property
    def ok(self) -> bool:
        return self.flushed and self.failed == 0 and self.confirmed == self.sent


def route(line: bytes, forced: TopicSpec | None) -> tuple[TopicSpec, bytes | None]:
    """Which topic a line goes to, and its key. Raises ValueError when it cannot be told."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if forced is not None:
            return forced, None  # bad bytes on purpose: the worker dead-letters them
        raise ValueError(f"not JSON ({exc}); pass --topic to send it anyway") from exc
    if forced is not None:
        return forced, message_key(forced, record) if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        raise ValueError("no 'kind' field to route by; pass --topic to send it anyway")
    try:
        spec = spec_for_kind(record["kind"])
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from exc
    return spec, message_key(spec, record)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def replay(
    settings: Settings,
    producer: KafkaProducer,
    lines: Iterator[tuple[int, bytes]],
    rate: float | None,
    forced: TopicSpec | None = None,
    progress: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Send each line; ``rate`` messages per second at most (None: as fast as possible)."""
    report = ReplayReport()
    started = time.monotonic()

    def on_ok(_: object) -> None:
        report.confirmed += 1

    def on_error(exc: BaseException) -> None:
        report.failed += 1
        report.first_error = report.first_error or repr(exc)

    for number, line in lines:
        try:
            spec, key = route(line, forced)
        except ValueError as exc:
            report.unroutable.append((number, str(exc)))
            continue
        if rate:
            due = started + report.sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        future = producer.send(settings.topic(spec.name), value=line, key=key)
        future.add_callback(on_ok)
        future.add_errback(on_error)
        report.sent += 1
        if progress is not None and report.sent % 1000 == 0:
            progress(report)
    try:
        producer.flush(timeout=60)
        report.flushed = True
    except KafkaError as exc:  # what was not delivered stays unconfirmed
        report.first_error = report.first_error or f"flush: {exc!r}"
    report.seconds = time.monotonic() - started
    return report
