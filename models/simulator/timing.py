"""When things are reported: base frequency per code, season, daily rhythm.

A record's day and hour and its code are drawn jointly, so that heating complaints fall in
the heating season, snow and ice in winter, barbecues and evening noise in summer nights,
night-time construction noise after 22:00, flooding in the July-August rains, and the busy
days (winter, with heating complaints on top of everything else) carry more records.
"""

from __future__ import annotations

import bisect
import random
from datetime import date, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8))

# Relative frequency in a city's 12345/digital city-management archive: street order and
# sanitation dominate; emergencies are rare but present (every code >= ~0.5% over a year).
BASE_WEIGHT: dict[str, float] = {
    "A01": 55, "A02": 18, "A03": 28, "A04": 9, "A05": 11, "A06": 10, "A07": 28, "A08": 11,
    "A09": 24, "A10": 45, "A11": 11, "A12": 32,
    "B01": 28, "B02": 11, "B03": 8,
    "C01": 42, "C02": 18, "C03": 14, "C04": 12,
    "D01": 55, "D02": 32, "D03": 65, "D04": 24, "D05": 18, "D06": 9, "D07": 8, "D08": 7,
    "E01": 18, "E02": 24, "E03": 24, "E04": 11, "E05": 22, "E06": 24, "E07": 7, "E08": 75,
    "E09": 12,
    "F01": 12, "F02": 10,
    "G01": 55, "G02": 11,
    "H01": 24, "H02": 9,
    "K01": 6.5, "K02": 7, "K03": 8,
}  # fmt: skip

# Month multipliers (Jan..Dec). Qingdao: snow only in mid-winter, rains and typhoons in
# July-August, dry windy springs, summer evenings outdoors.
MONTHLY: dict[str, tuple[float, ...]] = {
    "A10": (1.2, 0.9, 0.15, 0, 0, 0, 0, 0, 0, 0, 0.1, 1.0),
    "D05": (0.2, 0.2, 0.3, 0.6, 1.0, 1.8, 2.2, 2.2, 1.5, 0.8, 0.3, 0.2),
    "G01": (0.8, 0.8, 0.9, 1.0, 1.1, 1.3, 1.4, 1.4, 1.2, 1.0, 0.9, 0.8),
    "E05": (0.3, 0.3, 0.4, 0.6, 0.8, 1.6, 3.0, 3.0, 1.5, 0.6, 0.4, 0.3),
    "K01": (0.6, 0.6, 0.7, 0.8, 0.9, 1.3, 2.0, 2.0, 1.3, 0.8, 0.7, 0.6),
    "F01": (0.6, 0.7, 0.8, 0.8, 0.9, 1.2, 2.0, 2.2, 1.8, 0.8, 0.7, 0.6),
    "A06": (0.8, 0.8, 1.5, 1.6, 0.8, 0.6, 0.4, 0.4, 0.7, 2.0, 2.0, 1.0),
    "C02": (0.7, 0.9, 1.6, 1.7, 1.4, 0.9, 0.6, 0.6, 0.9, 1.1, 1.0, 0.7),
    "C01": (0.6, 0.4, 1.0, 1.2, 1.2, 1.2, 1.1, 1.1, 1.2, 1.2, 1.1, 0.8),
    "A04": (0.6, 0.6, 0.7, 0.9, 1.1, 1.4, 1.6, 1.6, 1.2, 0.9, 0.7, 0.6),
    "A09": (0.9, 0.9, 0.9, 1.0, 1.0, 1.2, 1.3, 1.3, 1.1, 1.0, 0.9, 0.9),
    "A11": (0.7, 0.7, 0.8, 0.9, 1.0, 1.3, 1.6, 1.6, 1.1, 1.0, 0.8, 0.7),
    "D08": (1.6, 1.4, 1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.8, 1.0, 1.3, 1.6),
    "E06": (1.3, 1.2, 1.0, 0.9, 0.9, 1.1, 1.3, 1.3, 1.0, 0.9, 0.9, 1.2),
    "K02": (1.4, 1.4, 1.3, 1.2, 1.0, 0.8, 0.7, 0.7, 0.8, 1.0, 1.2, 1.4),
    "E02": (1.2, 1.1, 1.0, 0.9, 0.9, 0.8, 0.8, 0.8, 0.9, 1.0, 1.1, 1.2),
    "B03": (0.8, 0.8, 1.2, 1.2, 0.9, 1.0, 1.5, 1.5, 1.1, 0.9, 1.0, 0.9),
    "E09": (0.9, 0.9, 0.8, 0.8, 0.9, 1.2, 1.5, 1.5, 1.0, 0.8, 0.9, 1.0),
    "A05": (0.8, 0.8, 0.9, 1.0, 1.1, 1.2, 1.2, 1.2, 1.1, 1.0, 0.9, 0.8),
}
# E08 within the heating season (Nov 15 - Apr 5), by month: the start of the season and the
# first cold snaps bring the most complaints.
HEATING_MONTHLY = (1.0, 0.9, 0.7, 0.5, 0, 0, 0, 0, 0, 0, 1.6, 1.2)
# Just outside the season (pipes filled and tested in early November, heating just stopped
# in early April) a heating pipe still leaks now and then; later nothing.
HEATING_EDGE = 0.03

# Calls to the hotline by hour of day (+08:00).
HOUR_VOLUME = (
    0.3, 0.2, 0.15, 0.1, 0.1, 0.2, 0.5, 1.0, 2.0, 2.6, 2.6, 2.2,
    1.4, 1.6, 2.2, 2.3, 2.1, 1.8, 1.4, 1.4, 1.4, 1.2, 0.9, 0.6,
)  # fmt: skip


def _hours(spec: dict[tuple[int, ...], float]) -> tuple[float, ...]:
    out = [1.0] * 24
    for hours, mult in spec.items():
        for h in hours:
            out[h] = mult
    return tuple(out)


_NIGHT = (22, 23, 0, 1, 2, 3, 4, 5)
HOUR_MOD: dict[str, tuple[float, ...]] = {
    # Night-time construction is what people call about after 22:00.
    "C01": _hours({_NIGHT: 4.0, (6,): 2.0, (12, 13): 1.5, (19, 20, 21): 1.5}),
    "G01": _hours({(19, 20, 21, 22, 23): 2.5, (0, 1, 2): 2.5, (6, 7): 1.8}),
    "D05": _hours({(18, 19, 20, 21, 22, 23): 3.0, (0, 1, 2): 3.0, tuple(range(6, 12)): 0.2}),
    "A09": _hours({(11, 12, 13): 1.5, (17, 18, 19, 20): 1.8}),
    "D01": _hours({(6, 7, 8): 1.6, (16, 17, 18, 19): 1.6}),
    "K03": _hours({(7, 8, 9): 1.7, (17, 18, 19): 1.7}),
    "A10": _hours({(6, 7, 8, 9, 10): 2.0}),
    "E02": _hours({(18, 19, 20, 21, 22, 23): 2.5, (0, 1, 2): 2.0, (5, 6): 1.5}),
    "K02": _hours({_NIGHT: 2.0}),
    "E07": _hours({(17, 18, 19, 20): 1.5}),
    "E08": _hours({(6, 7, 8, 9): 1.3, (18, 19, 20, 21, 22): 1.3}),
    "D08": _hours({(18, 19, 20, 21, 22, 23): 1.5}),
    "E01": _hours({_NIGHT: 1.5}),
}


def heating_phase(day: date) -> int:
    """2 inside the heating season (Nov 15 - Apr 5), 1 just outside it, 0 otherwise."""
    md = (day.month, day.day)
    if md >= (11, 15) or md <= (4, 5):
        return 2
    if (11, 1) <= md < (11, 15) or (4, 5) < md <= (4, 15):
        return 1
    return 0


def in_heating_season(day: date) -> bool:
    return heating_phase(day) == 2


def season_weight(code: str, day: date) -> float:
    if code == "E08":
        phase = heating_phase(day)
        if phase == 2:
            return HEATING_MONTHLY[day.month - 1] or 0.5
        return HEATING_EDGE if phase == 1 else 0.0
    monthly = MONTHLY.get(code)
    return monthly[day.month - 1] if monthly else 1.0


class Calendar:
    """Draws (reported_at, code) pairs for a date range, jointly by season and hour."""

    def __init__(self, codes: tuple[str, ...], start: date, end: date) -> None:
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        self.codes = codes
        self.days = tuple(start + timedelta(days=i) for i in range((end - start).days + 1))
        self._tables: dict[
            tuple[int, int], tuple[tuple[tuple[str, int], ...], tuple[float, ...]]
        ] = {}
        day_cum: list[float] = []
        total = 0.0
        for day in self.days:
            total += self._table(day)[1][-1]
            day_cum.append(total)
        self._day_cum = tuple(day_cum)

    def _table(self, day: date) -> tuple[tuple[tuple[str, int], ...], tuple[float, ...]]:
        key = (day.month, heating_phase(day))
        table = self._tables.get(key)
        if table is None:
            pairs: list[tuple[str, int]] = []
            cum: list[float] = []
            total = 0.0
            for code in self.codes:
                base = BASE_WEIGHT.get(code, 10.0) * season_weight(code, day)
                if base <= 0:
                    continue
                mod = HOUR_MOD.get(code)
                for hour, volume in enumerate(HOUR_VOLUME):
                    total += base * volume * (mod[hour] if mod else 1.0)
                    pairs.append((code, hour))
                    cum.append(total)
            table = self._tables[key] = (tuple(pairs), tuple(cum))
        return table

    def draw(self, rng: random.Random) -> tuple[datetime, str]:
        i = bisect.bisect_right(self._day_cum, rng.random() * self._day_cum[-1])
        day = self.days[min(i, len(self.days) - 1)]
        pairs, cum = self._table(day)
        j = bisect.bisect_right(cum, rng.random() * cum[-1])
        code, hour = pairs[min(j, len(pairs) - 1)]
        minute = int(rng.random() * 60)
        second = int(rng.random() * 60)
        return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=CST), code
