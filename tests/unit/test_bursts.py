"""The burst simulator (models.simulator.bursts): many reporters of one incident, hard
negatives, arrival order, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from models.simulator import to_wire
from models.simulator.bursts import KINDS, BurstReport, burst_stream
from schemas.domain import Domain
from schemas.records import parse_record
from streams.settings import REPO_ROOT

SEED, INCIDENTS, BACKGROUND = 11, 80, 600


@pytest.fixture(scope="module")
def stream(domain: Domain) -> list[BurstReport]:
    return burst_stream(domain, SEED, INCIDENTS, BACKGROUND)


def _by_incident(stream: list[BurstReport]) -> dict[str, list[BurstReport]]:
    out: dict[str, list[BurstReport]] = defaultdict(list)
    for b in stream:
        if b.incident_id is not None:
            out[b.incident_id].append(b)
    return out


def test_sizes_and_kinds(stream: list[BurstReport]) -> None:
    kinds = Counter(b.kind for b in stream)
    assert kinds["background"] == BACKGROUND
    assert set(kinds) <= set(KINDS)
    for kind in ("near_place", "other_problem", "recurrence"):
        assert kinds[kind] > 0, kind
    bursts = {i: m for i, m in _by_incident(stream).items() if m[0].kind == "burst"}
    assert len(bursts) == INCIDENTS
    sizes = [len(m) for m in bursts.values()]
    assert min(sizes) >= 2 and max(sizes) <= 30
    assert sum(1 for n in sizes if n >= 8) >= 5  # some big bursts, most small
    assert all(b.incident_id is None for b in stream if b.kind == "background")


def test_one_incident_is_told_in_many_ways(stream: list[BurstReport]) -> None:
    for members in _by_incident(stream).values():
        first = members[0].record
        # One problem at one place...
        assert {b.record.code for b in members} == {first.code}
        assert {(b.record.district, b.record.street) for b in members} == {
            (first.district, first.street)
        }
        if len(members) >= 5:
            # ...in different words, channels and forms of address.
            assert len({b.record.text for b in members}) == len(members)
            assert len({b.record.address_form for b in members}) >= 2
    channels = Counter(b.record.channel for b in stream if b.kind == "burst")
    assert len(channels) >= 4


def test_hard_negatives_imitate_their_incident(stream: list[BurstReport], domain: Domain) -> None:
    incidents = _by_incident(stream)
    for incident_id, members in incidents.items():
        kind = members[0].kind
        if kind == "burst":
            continue
        anchor = incidents[incident_id.rsplit("-", 1)[0]]
        a, n = anchor[0].record, members[0].record
        start_a = min(b.record.reported_at for b in anchor)
        start_n = min(b.record.reported_at for b in members)
        if kind == "near_place":
            assert n.code == a.code and n.district == a.district
            places_a = {b.record.place for b in anchor} - {None}
            places_n = {b.record.place for b in members} - {None}
            assert not places_a & places_n  # another 小区, landmark or crossing
            assert abs(start_n - start_a) < timedelta(days=1)
        elif kind == "other_problem":
            assert n.code != a.code and (n.district, n.street) == (a.district, a.street)
            assert domain.event_types[n.code].event_class != domain.event_types[a.code].event_class
        else:
            assert kind == "recurrence"
            assert n.code == a.code and (n.district, n.street) == (a.district, a.street)
            assert start_n - max(b.record.reported_at for b in anchor) >= timedelta(days=1)


def test_arrival_order_with_late_reports(stream: list[BurstReport]) -> None:
    arrivals = [b.arrived_at for b in stream]
    assert all(a is not None for a in arrivals)
    assert arrivals == sorted(arrivals)  # type: ignore[type-var]
    assert all(b.arrived_at >= b.record.reported_at for b in stream)  # type: ignore[operator]
    backwards = sum(
        1
        for x, y in zip(stream, stream[1:], strict=False)
        if y.record.reported_at < x.record.reported_at
    )
    assert backwards > 0
    late = [b for b in stream if b.arrived_at - b.record.reported_at > timedelta(minutes=2)]  # type: ignore[operator]
    assert 0 < len(late) < len(stream) * 0.15
    ids = [b.record.record_id for b in stream]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)


def test_reports_are_valid_wire_messages(stream: list[BurstReport]) -> None:
    for b in stream[:400]:
        parse_record(to_wire(b.record))


def test_typos_and_short_names_occur(stream: list[BurstReport]) -> None:
    named = [
        b.record
        for b in stream
        if b.kind != "background" and b.record.place and "交叉口" not in b.record.place
    ]
    as_written = sum(1 for r in named if r.place not in r.text)
    assert 0 < as_written < len(named) * 0.6


def test_seeded(domain: Domain, stream: list[BurstReport]) -> None:
    assert burst_stream(domain, SEED, INCIDENTS, BACKGROUND) == stream
    other = burst_stream(domain, SEED + 1, INCIDENTS, BACKGROUND)
    assert [b.record.text for b in other[:50]] != [b.record.text for b in stream[:50]]


def test_same_stream_in_another_process(stream: list[BurstReport]) -> None:
    code = (
        "from models.simulator.bursts import burst_stream;"
        "from schemas.domain import Domain;from streams.settings import Settings;"
        f"s = burst_stream(Domain.load(Settings().domain_file), {SEED}, {INCIDENTS}, "
        f"{BACKGROUND});"
        "print(s[-1].record.record_id, s[-1].record.text[:30], s[-1].incident_id)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    last = stream[-1]
    assert out == f"{last.record.record_id} {last.record.text[:30]} {last.incident_id}"


def test_small_and_empty_streams(domain: Domain) -> None:
    assert burst_stream(domain, 1, 0, 0) == []
    only = burst_stream(domain, 1, 1, 0, days=1)
    assert len({b.incident_id for b in only if b.kind == "burst"}) == 1
    with pytest.raises(ValueError):
        burst_stream(domain, 1, -1, 0)
    with pytest.raises(ValueError):
        burst_stream(domain, 1, 1, 0, days=0)
