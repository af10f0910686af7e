"""A seeded sample stream of city events and appeals for the demo and the benchmark:
the dispatch-history simulator's reports, plus a few deliberately broken records."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson

from schemas.domain import Domain

CST = timezone(timedelta(hours=8))
def _invalid(rng: random.Random, run_id: str, i: int, now: datetime) -> dict[str, Any]:
    choice = rng.randrange(4)
    if choice == 0:  # a number sent as a string
        return {
            "kind": "city_event",
            "schema_version": 1,
            "event_id": f"{run_id}-bad{i}",
            "source": "camera",
            "reported_at": now.isoformat(),
            "description": "x",
            "lon": "120.3",
        }
    if choice == 1:  # a required field missing
        return {
            "kind": "citizen_appeal",
            "schema_version": 1,
            "appeal_id": f"{run_id}-bad{i}",
            "channel": "app",
            "received_at": now.isoformat(),
        }
    if choice == 2:  # a version nobody speaks yet
        return {"kind": "city_event", "schema_version": 9, "event_id": f"{run_id}-bad{i}"}
    return {
        "kind": "city_event",
        "schema_version": 1,
        "event_id": f"{run_id}-bad{i}",
        "source": "grid_inspector",
        "reported_at": now.isoformat(),
        "description": "x",
        "district": "不存在区",
    }


def sample_records(
    domain: Domain,
    count: int,
    seed: int,
    run_id: str,
    invalid_every: int = 0,
    now: datetime | None = None,
    span: timedelta = timedelta(minutes=10),
    truth: dict[str, dict[str, str]] | None = None,
    bursts: int = 0,
) -> Iterator[dict[str, Any]]:
    """``count`` records; every ``invalid_every``-th one is broken in some way (0: none).

    The valid ones are the dispatch-history simulator's reports as they arrive live
    (appeals in citizens' words, inspectors' events), re-stamped to within ``span`` before
    ``now`` and given ids of this run, so repeated runs add up instead of replacing each
    other. ``truth``, when given, collects each valid report's right unit and code (what
    the units' feedback simulator answers with).

    ``bursts``: that many incidents reported by several people (``models.simulator.bursts``:
    one burst pipe, one noisy site, with near misses that are other problems), on top of
    ``count``, re-stamped into the span; their truth names the incident. The records come
    in report-time order, as a live stream does."""
    records = list(_sample_records(domain, count, seed, run_id, invalid_every, now, span, truth))
    if bursts:
        records.extend(_burst_records(domain, bursts, seed, run_id, now, span, truth))
    records.sort(key=_reported)
    yield from records


def _reported(record: dict[str, Any]) -> str:
    at = record.get("reported_at") or record.get("received_at") or ""
    return datetime.fromisoformat(at).astimezone(UTC).isoformat() if at else ""


def _restamped(
    record: Any,
    prefix: str,
    n: int,
    at: datetime,
    truth: dict[str, dict[str, str]] | None,
    facts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A simulated record on the wire with this run's id (``<prefix>e<n>`` for events,
    ``<prefix>a<n>`` for appeals) and time; its right unit and code (and ``facts``) go to
    ``truth``."""
    from models.simulator import to_wire

    wire = to_wire(record)
    if wire["kind"] == "city_event":
        wire["event_id"] = f"{prefix}e{n}"
        wire["reported_at"] = at.isoformat()
    else:
        wire["appeal_id"] = f"{prefix}a{n}"
        wire["received_at"] = at.isoformat()
    if truth is not None:
        record_id = wire.get("event_id") or wire["appeal_id"]
        truth[record_id] = {"unit": record.true_unit, "code": record.code, **(facts or {})}
    return wire


def _burst_records(
    domain: Domain,
    bursts: int,
    seed: int,
    run_id: str,
    now: datetime | None,
    span: timedelta,
    truth: dict[str, dict[str, str]] | None,
) -> Iterator[dict[str, Any]]:
    from models.simulator.bursts import burst_stream

    now = now or datetime.now(UTC)
    days = max(1, int(span.total_seconds() // 86400))
    stream = burst_stream(domain, seed, n_incidents=bursts, background=0, days=days)
    if not stream:
        return
    first = min(b.record.reported_at for b in stream)
    last = max(b.record.reported_at for b in stream)
    # Squeezed into the span when the span is shorter than the simulator's day.
    scale = min(1.0, span / max(last - first, timedelta(seconds=1)))
    for n, burst in enumerate(stream):
        record = burst.record
        at = (now - span + (record.reported_at - first) * scale).astimezone(CST)
        yield _restamped(record, f"{run_id}-b", n, at, truth,
                         {"incident": burst.incident_id or ""})


def _sample_records(
    domain: Domain,
    count: int,
    seed: int,
    run_id: str,
    invalid_every: int,
    now: datetime | None,
    span: timedelta,
    truth: dict[str, dict[str, str]] | None,
) -> Iterator[dict[str, Any]]:
    from models.simulator import generate_history

    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    history = generate_history(
        domain, count, seed=seed, start=date(2025, 1, 1), end=date(2026, 10, 31)
    )
    for i, record in enumerate(history):
        reported = (
            now - timedelta(seconds=rng.randint(0, int(span.total_seconds())))
        ).astimezone(CST)
        if invalid_every and i % invalid_every == invalid_every - 1:
            yield _invalid(rng, run_id, i, reported)
            continue
        yield _restamped(record, f"{run_id}-", i, reported, truth)


def json_lines(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Records as JSON lines (no trailing newline), absent (None) fields left out."""
    for record in records:
        yield orjson.dumps({k: v for k, v in record.items() if v is not None})
