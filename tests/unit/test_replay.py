"""Replay: route each JSON line to its topic with its key, pace it, count confirmations."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError

from streams.replay import ReplayReport, read_lines, replay, route
from streams.settings import Settings
from streams.topics import CITIZEN_APPEALS, CITY_EVENTS, DEAD_LETTERS, VIDEO_FRAMES

from .factories import citizen_appeal, city_event, encode, video_frame

# --- route -----------------------------------------------------------------------------------


def test_a_city_event_goes_to_city_events_keyed_by_district() -> None:
    spec, key = route(encode(city_event(district="崂山区")), None)
    assert spec is CITY_EVENTS
    assert key == "崂山区".encode()


def test_a_city_event_without_district_is_keyed_by_its_id() -> None:
    rec = city_event(event_id="EV-9")
    del rec["district"]
    spec, key = route(encode(rec), None)
    assert spec is CITY_EVENTS
    assert key == b"EV-9"


def test_appeals_and_frames_go_to_their_topics() -> None:
    assert route(encode(citizen_appeal()), None) == (CITIZEN_APPEALS, "西海岸新区".encode())
    assert route(encode(video_frame()), None) == (VIDEO_FRAMES, b"cam-7")


@pytest.mark.parametrize(
    "line",
    [
        encode({"kind": "dispatch_decision", "schema_version": 1}),
        encode({"kind": "no_such_kind"}),
    ],
)
def test_a_kind_without_an_input_topic_is_unroutable(line: bytes) -> None:
    with pytest.raises(ValueError, match="kind"):
        route(line, None)


@pytest.mark.parametrize(
    "line",
    [encode({"event_id": "x"}), encode([1, 2]), encode({"kind": 7}), b'"city_event"'],
)
def test_a_record_without_a_string_kind_is_unroutable(line: bytes) -> None:
    with pytest.raises(ValueError, match="kind"):
        route(line, None)


def test_non_json_without_a_forced_topic_is_unroutable() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        route(b"{this is not json", None)


def test_non_json_with_a_forced_topic_goes_there_without_a_key() -> None:
    assert route(b"\xff\xfe garbage", CITIZEN_APPEALS) == (CITIZEN_APPEALS, None)


def test_a_forced_topic_wins_over_the_kind_and_keys_by_its_fields() -> None:
    spec, key = route(encode(city_event(district="市南区")), VIDEO_FRAMES)
    assert spec is VIDEO_FRAMES
    assert key is None  # a city event has no camera_id
    spec, key = route(encode(city_event(district="市南区")), CITIZEN_APPEALS)
    assert (spec, key) == (CITIZEN_APPEALS, "市南区".encode())


def test_forced_json_that_is_not_an_object_has_no_key() -> None:
    assert route(b"[1, 2, 3]", CITY_EVENTS) == (CITY_EVENTS, None)


# --- read_lines ------------------------------------------------------------------------------


def test_read_lines_skips_blanks_strips_line_ends_and_numbers_from_one(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\r\n\r\n   \n{"b":"\xe5\xb8\x82"}\n\t\n{"c":3}')
    assert list(read_lines(path)) == [
        (1, b'{"a":1}'),
        (4, b'{"b":"\xe5\xb8\x82"}'),
        (6, b'{"c":3}'),
    ]


def test_read_lines_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert list(read_lines(path)) == []


# --- replay ----------------------------------------------------------------------------------


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self._error = error

    def add_callback(self, fn: Callable[[Any], None]) -> FakeFuture:
        if self._error is None:
            fn(object())
        return self

    def add_errback(self, fn: Callable[[BaseException], None]) -> FakeFuture:
        if self._error is not None:
            fn(self._error)
        return self


class FakeProducer:
    """Resolves each send at once; ``fail_keys`` sends fail, ``flush_error`` on flush."""

    def __init__(
        self,
        fail_values: set[bytes] | None = None,
        flush_error: BaseException | None = None,
    ) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, float]] = []
        self.fail_values = fail_values or set()
        self.flush_error = flush_error
        self.flushed = 0

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> FakeFuture:
        self.sent.append((topic, value, key, time.monotonic()))
        error = KafkaTimeoutError("no broker") if value in self.fail_values else None
        return FakeFuture(error)

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1
        if self.flush_error is not None:
            raise self.flush_error


def numbered(*lines: bytes) -> list[tuple[int, bytes]]:
    return list(enumerate(lines, start=1))


def test_replay_sends_every_routable_line_to_its_prefixed_topic() -> None:
    settings = Settings(topic_prefix="t1.")
    producer = FakeProducer()
    ev, ap = encode(city_event()), encode(citizen_appeal())
    report = replay(settings, producer, iter(numbered(ev, ap)), rate=None)  # type: ignore[arg-type]
    assert [(t, v, k) for t, v, k, _ in producer.sent] == [
        ("t1.city.events", ev, "市南区".encode()),
        ("t1.citizen.appeals", ap, "西海岸新区".encode()),
    ]
    assert (report.sent, report.confirmed, report.failed, report.unroutable) == (2, 2, 0, [])
    assert report.ok
    assert producer.flushed == 1
    assert report.seconds >= 0


def test_replay_counts_confirmed_failed_and_unroutable() -> None:
    bad_send = encode(city_event(event_id="fails"))
    lines = numbered(
        encode(city_event()),
        b"not json",
        bad_send,
        encode({"kind": "unknown"}),
        encode(video_frame()),
    )
    producer = FakeProducer(fail_values={bad_send})
    report = replay(Settings(), producer, iter(lines), rate=None)  # type: ignore[arg-type]
    assert report.sent == 3
    assert report.confirmed == 2
    assert report.failed == 1
    assert [n for n, _ in report.unroutable] == [2, 4]
    assert "not JSON" in report.unroutable[0][1]
    assert not report.ok
    assert report.first_error is not None and "no broker" in report.first_error


def test_replay_with_a_forced_topic_sends_even_bad_bytes() -> None:
    producer = FakeProducer()
    lines = numbered(b"not json", encode(city_event()))
    report = replay(
        Settings(),
        producer,  # type: ignore[arg-type]
        iter(lines),
        rate=None,
        forced=DEAD_LETTERS,
    )
    assert [t for t, *_ in producer.sent] == [DEAD_LETTERS.name] * 2
    assert (report.sent, report.confirmed, report.unroutable) == (2, 2, [])


def test_a_failed_flush_makes_the_report_not_ok() -> None:
    producer = FakeProducer(flush_error=KafkaError("flush timed out"))
    report = replay(Settings(), producer, iter(numbered(encode(city_event()))), rate=None)  # type: ignore[arg-type]
    assert report.confirmed == 1
    assert not report.ok
    assert report.first_error is not None and "flush timed out" in report.first_error


def test_replay_reports_progress_every_thousand_messages() -> None:
    seen: list[int] = []
    line = encode(city_event())
    lines = [(i, line) for i in range(1, 2501)]
    replay(
        Settings(),
        FakeProducer(),  # type: ignore[arg-type]
        iter(lines),
        rate=None,
        progress=lambda r: seen.append(r.sent),
    )
    assert seen == [1000, 2000]


def test_replay_paces_to_the_rate() -> None:
    producer = FakeProducer()
    line = encode(city_event())
    started = time.monotonic()
    report = replay(Settings(), producer, iter([(i, line) for i in range(1, 21)]), rate=200)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert report.sent == 20
    # 20 messages at 200/s: the last one is due 19/200 = 0.095 s after the first.
    assert elapsed >= 0.09
    assert report.seconds >= 0.09
    assert elapsed < 2.0
    # Not all at once at the end: the sends are spread over the interval.
    times = [t for *_, t in producer.sent]
    assert times[10] - times[0] >= 0.04


def test_empty_file_replayed_is_ok() -> None:
    report = replay(Settings(), FakeProducer(), iter([]), rate=None)  # type: ignore[arg-type]
    assert report.ok and report.sent == 0
    assert not ReplayReport().ok  # a report of a replay that never flushed
