"""Hotspots: places that keep producing cases (pure; the worker's timer runs the query).

A case's place is the most specific one its reports gave (``processors.merge.case_place``:
a 小区 or landmark, a crossing, a road and house number). When one place has at least
``rule.min_cases`` cases opened in the last ``rule.days`` local days, it is raised once
per place and day (``hotspot_id`` = district, place and day), so a worker that restarts
and raises it again replaces the same row instead of adding one.

The counting query works on chDB and on the 18.16 server alike: local days are computed
by arithmetic on the epoch (no time-zone functions), and the place levels are bound as
quoted literals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from processors.merge import CITY_TZ, HotspotRule, hotspots
from schemas.records import HotspotAlert

DAY_S = 86400
MAX_CASE_IDS = 50  # the alert names the latest cases; the view has them all


def _local_offset_s() -> int:
    offset = CITY_TZ.utcoffset(None)
    return int(offset.total_seconds()) if offset is not None else 0


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hotspot_counts_sql(rule: HotspotRule, now: datetime) -> str:
    """Cases per place and local day over the rule's window, from the ``cases`` view."""
    offset = _local_offset_s()
    today = int((now.astimezone(UTC).timestamp() + offset) // DAY_S)
    since_day = today - (rule.days - 1)
    levels = ", ".join(_quoted(level) for level in sorted(rule.levels))
    return f"""
SELECT district, place_level, place,
       intDiv(toUInt32(first_reported) + {offset}, {DAY_S}) AS day,
       count() AS cases,
       groupArray(case_id) AS case_ids
FROM cases
WHERE place != '' AND district != '' AND place_level IN ({levels})
  AND first_reported >= toDateTime({since_day * DAY_S - offset})
GROUP BY district, place_level, place, day
ORDER BY district, place, day
"""


@dataclass(frozen=True, slots=True)
class PlaceDay:
    """One row of ``hotspot_counts_sql``."""

    district: str
    place_level: str
    place: str
    day: int  # local days since 1970-01-01
    cases: int
    case_ids: tuple[str, ...]


def place_days(rows: Iterable[Sequence[object]]) -> list[PlaceDay]:
    out = []
    for district, level, place, day, cases, case_ids in rows:
        out.append(
            PlaceDay(
                str(district), str(level), str(place), int(str(day)), int(str(cases)),
                tuple(str(c) for c in case_ids),  # type: ignore[attr-defined]
            )
        )
    return out


def hotspot_alerts(
    rows: Iterable[PlaceDay], now: datetime, rule: HotspotRule | None = None
) -> list[HotspotAlert]:
    """The places over the rule's threshold, as alerts (most cases first)."""
    rule = rule or HotspotRule()
    by_key: dict[str, dict[str, int]] = {}
    ids: dict[str, list[str]] = {}
    levels: dict[str, str] = {}
    for row in rows:
        key = f"{row.district}|{row.place}"
        day = (date(1970, 1, 1) + timedelta(days=row.day)).isoformat()
        by_key.setdefault(key, {})[day] = by_key.get(key, {}).get(day, 0) + row.cases
        ids.setdefault(key, []).extend(row.case_ids)
        levels[key] = row.place_level
    raised_at = now.astimezone(UTC).isoformat()
    alerts = []
    for spot in hotspots(by_key, now, rule):
        key = f"{spot.district}|{spot.place}"
        first, last = spot.window
        alerts.append(
            HotspotAlert(
                kind="hotspot",
                schema_version=1,
                hotspot_id=f"{spot.district}|{spot.place}|{last.isoformat()}"[:300],
                district=spot.district,
                place_level=levels.get(key, ""),
                place=spot.place[:200],
                cases=spot.cases,
                first_day=first.isoformat(),
                last_day=last.isoformat(),
                case_ids=tuple(sorted(set(ids.get(key, ()))))[-MAX_CASE_IDS:],
                raised_at=raised_at,  # type: ignore[arg-type]
            )
        )
    return alerts


def new_alerts(
    alerts: Iterable[HotspotAlert], raised: Mapping[str, int]
) -> list[HotspotAlert]:
    """The alerts not yet raised with this many cases (``raised``: id -> cases)."""
    return [a for a in alerts if raised.get(a.hotspot_id, 0) < a.cases]
