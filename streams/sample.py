"""A small seeded sample stream of city events and appeals for the demo and the benchmark.

Not the dispatch-history simulator (that one models how people really write); this
only has to exercise the backbone: every input kind, every district, a few bad records.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from schemas.domain import Domain

CST = timezone(timedelta(hours=8))
_SOURCES = ("grid_inspector", "grid_inspector", "camera", "sensor")
_CHANNELS = ("hotline_12345", "hotline_12345", "app", "wechat", "web")
_APPEAL_FORMS = (
    "您好，{road}附近{problem}，已经好几天了，麻烦尽快处理。",
    "{district}{street}这边{problem}，影响居民出行。",
    "反映一下，{road}{problem}，希望有关部门管一管！",
)


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
) -> Iterator[dict[str, Any]]:
    """``count`` records; every ``invalid_every``-th one is broken in some way (0: none)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    districts = list(domain.districts)
    streets = {d: [s for s, dd in domain.street_district.items() if dd == d] for d in districts}
    roads = {d: [r for r, ds in domain.road_districts.items() if d in ds] for d in districts}
    codes = list(domain.event_types.values())
    for i in range(count):
        reported = (now - timedelta(seconds=rng.randint(0, 600))).astimezone(CST)
        if invalid_every and i % invalid_every == invalid_every - 1:
            yield _invalid(rng, run_id, i, reported)
            continue
        district = rng.choice(districts)
        street = rng.choice(streets[district])
        road = rng.choice(roads[district]) if roads[district] else ""
        event_type = rng.choice(codes)
        if rng.random() < 0.5:
            yield {
                "kind": "city_event",
                "schema_version": 1,
                "event_id": f"{run_id}-e{i}",
                "source": rng.choice(_SOURCES),
                "reported_at": reported.isoformat(),
                "district": district,
                "street": street,
                "road": road,
                "location_type": rng.choice(domain.location_types),
                "lon": round(120.38 + rng.uniform(-0.3, 0.3), 5),
                "lat": round(36.07 + rng.uniform(-0.2, 0.2), 5),
                "code": event_type.code,
                "description": f"{road}{event_type.name}",
                "reporter_id": f"G{rng.randint(1000, 9999)}",
            }
        else:
            form = rng.choice(_APPEAL_FORMS)
            yield {
                "kind": "citizen_appeal",
                "schema_version": 1,
                "appeal_id": f"{run_id}-a{i}",
                "channel": rng.choice(_CHANNELS),
                "received_at": reported.isoformat(),
                "text": form.format(
                    district=district, street=street, road=road, problem=event_type.name
                ),
                "district": district if rng.random() < 0.3 else None,
            }


def json_lines(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Records as JSON lines (no trailing newline), absent (None) fields left out."""
    for record in records:
        yield orjson.dumps({k: v for k, v in record.items() if v is not None})
