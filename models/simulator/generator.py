"""Generate a city's dispatch history: report texts and the unit that handled each.

Seeded and reproducible: one ``random.Random(seed)`` drives every choice, and nothing
iterates over a ``set`` of strings or calls ``hash()`` (both vary between processes).

Labels come from the domain's dispatch rule (``processors.dispatch_rule``); the archive's
``unit`` is that rule's unit except in the ~3% of records that were mis-dispatched in
history, where it is a plausible wrong unit (``true_unit`` keeps the right one).
"""

from __future__ import annotations

import bisect
import random
import zlib
from dataclasses import dataclass, fields
from datetime import date, datetime

from models.simulator.addresses import Address, Gazetteer
from models.simulator.grammar import pick
from models.simulator.phrasing import (
    STYLE_RENDERERS,
    TRADITIONAL_SHARE,
    Caller,
    CodeText,
    Composer,
    Marking,
    finish,
    load_code_texts,
    make_caller,
)
from models.simulator.timing import Calendar
from processors.dispatch_rule import (
    BY_OWNER,
    STREET_ROUTE,
    UNKNOWN_OWNER,
    read_owner,
    route_for,
    street_office,
    unit_for,
)
from schemas.domain import Domain

CHANNELS: tuple[str, ...] = ("hotline_12345", "app", "wechat", "web", "letter", "grid_inspector")

# Shares of the archive's quirks (see the brief of issue #3).
P_INSUFFICIENT = 0.04  # of records whose unit needs a place (utilities do not)
P_MIS_DISPATCH = 0.031
P_SECOND_PROBLEM = 0.058

_URGENCY_RANK = {"normal": 1, "urgent": 2, "critical": 3}

# People per district, roughly: where the reports come from.
_DISTRICT_WEIGHT = {
    "市南区": 10, "市北区": 14, "李沧区": 10, "崂山区": 8, "黄岛区": 18, "城阳区": 11,
    "即墨区": 11, "胶州市": 8, "平度市": 6, "莱西市": 4,
}  # fmt: skip
_LOC_DISTRICT_FACTOR = {
    "village": {
        "李沧区": 0.5,
        "崂山区": 1.0,
        "黄岛区": 1.2,
        "即墨区": 1.5,
        "胶州市": 1.6,
        "平度市": 2.2,
        "莱西市": 2.2,
    },
    "industrial": {
        "市南区": 0.2,
        "市北区": 0.6,
        "黄岛区": 1.6,
        "城阳区": 1.5,
        "即墨区": 1.3,
        "胶州市": 1.4,
    },
    "waterfront": {"市南区": 1.6, "崂山区": 1.6, "黄岛区": 1.5, "市北区": 0.7},
}
# Which cover owners turn up, when a cover is reported.
_OWNER_WEIGHT = {
    "water": 0.17, "sewer": 0.2, "storm": 0.17, "power": 0.1, "gas": 0.07, "heating": 0.06,
    "telecom": 0.13, "unknown": 0.1,
}  # fmt: skip

# Problems reported together (~5%): both must be possible at the same kind of place.
_PAIRS = (
    "A01-A12 A01-D01 A01-A07 A01-A06 A01-A11 A02-C03 A02-A07 A03-C03 A03-D01 A05-F02 A09-D02 "
    "A09-G01 A09-D05 D01-D02 D01-D05 D02-D03 D03-D04 C01-C02 C02-C03 C04-E03 E01-E03 E03-E05 "
    "E02-E03 E04-K03 F01-E09 F01-E02 H01-F02 H01-H02 G02-A04 B01-B02 B02-B03 E06-E03 K01-E05 "
    "K02-E09 D06-D02 G01-D02 G01-D05 A10-E02 A10-E03 E07-C04 D07-D03 A08-A07 B03-F01 K03-D03"
)

# Units a dispatcher plausibly confuses with the right one (for the mis-dispatched records).
_CONFUSED = {
    "城市管理局": (
        "环境卫生服务中心",
        "市场监督管理局",
        "住房和城乡建设局",
        "公安分局交通警察大队",
    ),
    "环境卫生服务中心": ("城市管理局", "园林和林业局", "市政设施服务中心"),
    "市政设施服务中心": ("水务局", "公安分局交通警察大队", "环境卫生服务中心", "住房和城乡建设局"),
    "园林和林业局": ("环境卫生服务中心", "城市管理局"),
    "水务局": ("市政设施服务中心", "生态环境分局", "环境卫生服务中心"),
    "住房和城乡建设局": ("城市管理局", "生态环境分局"),
    "生态环境分局": ("水务局", "城市管理局", "住房和城乡建设局"),
    "公安分局": ("城市管理局", "生态环境分局", "住房和城乡建设局"),
    "公安分局交通警察大队": ("城市管理局", "市政设施服务中心"),
    "市场监督管理局": ("城市管理局",),
    "交通运输局": ("公安分局交通警察大队", "城市管理局"),
    "民政局": ("公安分局", "城市管理局"),
    "消防救援大队": ("公安分局", "城市管理局"),
}
_CONFUSED_UTILITY = {
    "water": ("D:水务局", "D:市政设施服务中心"),
    "gas": ("D:消防救援大队", "D:市政设施服务中心"),
    "heating": ("U:water", "D:市政设施服务中心"),
    "power": ("D:市政设施服务中心", "U:telecom"),
    "telecom": ("D:市政设施服务中心", "U:power"),
}

_STYLE_BY_CHANNEL = {
    "hotline_12345": (("operator", "colloquial"), (0.88, 1.0)),
    "app": (("short_message", "colloquial", "web_form"), (0.45, 0.78, 1.0)),
    "wechat": (("short_message", "colloquial"), (0.55, 1.0)),
    "web": (("web_form", "colloquial", "letter"), (0.5, 0.75, 1.0)),
    "letter": (("letter",), (1.0,)),
    "grid_inspector": (("inspector",), (1.0,)),
}
_CALLER_SHARE = {"hotline_12345": 0.75, "app": 0.3, "wechat": 0.1, "web": 0.3, "letter": 0.4}


class SimulatorError(ValueError):
    """The domain cannot be simulated (e.g. an event code without text material)."""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    record_id: str
    text: str
    channel: str  # hotline_12345 | app | wechat | web | letter | grid_inspector
    style: str
    reported_at: datetime  # aware, +08:00
    code: str
    second_code: str | None
    district: str
    street: str
    road: str | None
    place: str | None
    location_type: str
    owner: str | None  # only for E01-like (by_owner) codes: a key of owner_routes
    address_form: str
    address_sufficient: bool
    true_unit: str
    unit: str  # what the archive says (mis-dispatched in ~3%)
    mis_dispatched: bool
    route: str  # the rule's route of true_unit
    # What the report itself establishes (None: a reader cannot tell); the live stream's
    # inspector events carry these as their district/street fields.
    stated_district: str | None = None
    stated_street: str | None = None
    caller_name: str | None = None
    caller_phone: str | None = None


def _cum(weights: list[float]) -> tuple[float, ...]:
    total = 0.0
    out: list[float] = []
    for w in weights:
        total += w
        out.append(total)
    return tuple(out)


def _draw(rng: random.Random, items: tuple[str, ...], cum: tuple[float, ...]) -> str:
    i = bisect.bisect_right(cum, rng.random() * cum[-1])
    return items[min(i, len(items) - 1)]


class Simulator:
    """Everything derived from the domain once; ``record`` draws one archive entry."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.codes = tuple(domain.event_types)
        try:
            self.texts: dict[str, CodeText] = load_code_texts(self.codes)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from exc
        self.gaz = Gazetteer(domain)
        self.by_owner = {c for c, t in domain.event_types.items() if t.default_unit == BY_OWNER}
        owners = tuple(domain.owner_routes)
        self.owners = owners
        self.owner_cum = _cum([_OWNER_WEIGHT.get(o, 0.05) for o in owners])
        self.markings_of: dict[str, tuple[str, ...]] = {}
        for word, owner in domain.owner_markings.items():
            self.markings_of[owner] = (*self.markings_of.get(owner, ()), word)
        self.district_cum: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
        for loc in domain.location_types:
            names: list[str] = []
            weights: list[float] = []
            for d in domain.districts:
                w = _DISTRICT_WEIGHT.get(d, 8.0) * _LOC_DISTRICT_FACTOR.get(loc, {}).get(d, 1.0)
                if loc == "village" and not self.gaz.has_villages[d]:
                    w = 0.0
                if w > 0:
                    names.append(d)
                    weights.append(w)
            self.district_cum[loc] = (tuple(names), _cum(weights))
        self.partners: dict[str, tuple[str, ...]] = {}
        for pair in _PAIRS.split():
            a, b = pair.split("-")
            if a in self.texts and b in self.texts:
                self.partners[a] = (*self.partners.get(a, ()), b)
                self.partners[b] = (*self.partners.get(b, ()), a)
        self.e01_retries = 0

    # ---- one record --------------------------------------------------------------------
    def record(self, rng: random.Random, calendar: Calendar) -> dict[str, object]:
        domain = self.domain
        reported_at, code = calendar.draw(rng)
        ct = self.texts[code]
        loc = _draw(rng, ct.locs, ct.loc_cum)
        names, cum = self.district_cum[loc]
        district = _draw(rng, names, cum)
        street = self._street(rng, district, loc)
        owner = _draw(rng, self.owners, self.owner_cum) if code in self.by_owner else None
        route = route_for(domain, code, loc, owner)
        true_unit = unit_for(domain, route, district, street).unit
        if true_unit is None:  # cannot happen: district and street are always known here
            raise SimulatorError(f"no unit for {code} at {district}/{street}")
        need = (
            "street" if route == STREET_ROUTE else "district" if route.startswith("D:") else "none"
        )

        channel = self._channel(rng, reported_at, ct)
        styles, style_cum = _STYLE_BY_CHANNEL[channel]
        style = _draw(rng, styles, style_cum)
        p_insufficient = P_INSUFFICIENT * (0.3 if style == "inspector" else 1.0)
        sufficient = need == "none" or rng.random() >= p_insufficient
        formal = style in ("operator", "inspector", "letter") or (
            style == "web_form" and rng.random() < 0.5
        )
        addr = self.gaz.address(
            rng, district=district, street=street, loc=loc, need=need, sufficient=sufficient,
            formal=formal, home=ct.home,
        )  # fmt: skip
        urgency = domain.event_types[code].urgency
        second, second_first = self._second(rng, code, loc, urgency)
        caller = make_caller(rng) if rng.random() < _CALLER_SHARE.get(channel, 0.0) else None
        text = self._text(rng, ct, loc, urgency, owner, second, second_first, addr, style, caller)

        unit, mis = true_unit, False
        if rng.random() < P_MIS_DISPATCH:
            wrong = self._wrong_unit(rng, code, loc, route, district, street, true_unit)
            if wrong is not None:
                unit, mis = wrong, True
        sufficient_now = (
            (need == "street" and addr.stated_street is not None)
            or (need == "district" and addr.stated_district is not None)
            or need == "none"
        )
        return {
            "text": text,
            "channel": channel,
            "style": style,
            "reported_at": reported_at,
            "code": code,
            "second_code": second.code if second else None,
            "district": district,
            "street": street,
            "road": addr.road,
            "place": addr.place,
            "location_type": loc,
            "owner": owner,
            "address_form": addr.form,
            "address_sufficient": sufficient_now,
            "true_unit": true_unit,
            "unit": unit,
            "mis_dispatched": mis,
            "route": route,
            "stated_district": addr.stated_district,
            "stated_street": addr.stated_street,
            "caller_name": caller.name if caller else None,
            "caller_phone": caller.phone if caller else None,
        }

    def _street(self, rng: random.Random, district: str, loc: str) -> str:
        streets = self.gaz.streets_of[district]
        if loc == "village":
            towns = tuple(s for s in streets if s.endswith("镇") and not s.endswith("街道"))
            if towns and rng.random() < 0.6:
                return pick(rng, towns)
        return pick(rng, streets)

    def _channel(self, rng: random.Random, at: datetime, ct: CodeText) -> str:
        hour = at.hour
        if 8 <= hour <= 18:
            p_inspector = (0.3 if at.weekday() < 5 else 0.1) * ct.inspect
            if rng.random() < p_inspector:
                return "grid_inspector"
        urgent = _URGENCY_RANK[self.domain.event_types[ct.code].urgency] == 3
        office = 8 <= hour <= 17
        weights = (
            0.55 * (2.0 if urgent else 1.0),  # hotline
            0.16,  # app
            0.14,  # wechat
            0.10 * (0.3 if urgent else 1.0),  # web
            0.05 if office and not urgent else 0.0,  # letter (logged in office hours)
        )
        return _draw(rng, CHANNELS[:5], _cum(list(weights)))

    def _second(
        self, rng: random.Random, code: str, loc: str, urgency: str
    ) -> tuple[CodeText | None, bool]:
        if rng.random() >= P_SECOND_PROBLEM:
            return None, False
        rank = _URGENCY_RANK[urgency]
        options = tuple(
            p
            for p in self.partners.get(code, ())
            if loc in self.texts[p].locs
            and _URGENCY_RANK[self.domain.event_types[p].urgency] <= rank
            and self.texts[p].core.for_loc(loc)
        )
        if not options:
            return None, False
        other = pick(rng, options)
        # The label is the more urgent problem; with equal urgency, the one named first.
        less_urgent = _URGENCY_RANK[self.domain.event_types[other].urgency] < rank
        return self.texts[other], less_urgent and rng.random() < 0.4

    def _text(
        self,
        rng: random.Random,
        ct: CodeText,
        loc: str,
        urgency: str,
        owner: str | None,
        second: CodeText | None,
        second_first: bool,
        addr: Address,
        style: str,
        caller: Caller | None,
    ) -> str:
        render = STYLE_RENDERERS[style]
        trad = TRADITIONAL_SHARE.get(style, 0.0)
        if owner is None:
            comp = Composer(rng, ct, loc, urgency, None, second, second_first)
            return finish(comp, render(comp, addr, caller), addr, trad)
        # A cover: its marking decides the owner, so the text must read back to that owner
        # (the rule reads markings near a cover word); redraw the few texts that do not.
        words = self.markings_of.get(owner, ())
        text = ""
        for _ in range(6):
            marking = (
                Marking(pick(rng, words), False) if words else Marking(None, rng.random() < 0.6)
            )
            comp = Composer(rng, ct, loc, urgency, marking, second, second_first)
            text = finish(comp, render(comp, addr, caller), addr, trad)
            expected = owner if words else UNKNOWN_OWNER
            if read_owner(self.domain, text) == expected:
                return text
            self.e01_retries += 1
        return text

    def _wrong_unit(
        self,
        rng: random.Random,
        code: str,
        loc: str,
        route: str,
        district: str,
        street: str,
        true_unit: str,
    ) -> str | None:
        domain = self.domain
        candidates: list[str] = []
        default = domain.event_types[code].default_unit
        if default != BY_OWNER and route != default:
            # An override applied and the dispatcher used the default unit anyway.
            unit = unit_for(domain, default, district, street).unit
            if unit:
                candidates += [unit, unit]
        if route == STREET_ROUTE:
            neighbours = tuple(s for s in self.gaz.streets_of[district] if s != street)
            if neighbours:
                candidates.append(street_office(pick(rng, neighbours)))
        elif route.startswith("D:"):
            for alt in _CONFUSED.get(route[2:], ()):
                if alt in domain.departments:
                    candidates.append(f"{district}{alt}")
            if rng.random() < 0.25:
                candidates.append(street_office(street))
        elif route.startswith("U:"):
            for alt_route in _CONFUSED_UTILITY.get(route[2:], ()):
                try:
                    unit = unit_for(domain, alt_route, district, street).unit
                except ValueError:
                    continue
                if unit:
                    candidates.append(unit)
        candidates = [u for u in candidates if u != true_unit]
        return pick(rng, tuple(candidates)) if candidates else None


def generate_history(
    domain: Domain, n: int, *, seed: int, start: date, end: date
) -> list[HistoryRecord]:
    """``n`` archive records reported between ``start`` and ``end`` (both inclusive), in time
    order; the same (domain, n, seed, start, end) gives the same records in any process."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    sim = Simulator(domain)
    rng = random.Random(seed)
    calendar = Calendar(sim.codes, start, end)
    drawn = [sim.record(rng, calendar) for _ in range(n)]
    order = sorted(range(n), key=lambda i: (drawn[i]["reported_at"], i))
    width = max(6, len(str(n)))
    return [
        HistoryRecord(record_id=f"h{seed}-{k:0{width}d}", **drawn[i])  # type: ignore[arg-type]
        for k, i in enumerate(order)
    ]


def history_to_json(record: HistoryRecord) -> dict[str, object]:
    """A JSON-ready dict (the reported_at as ISO 8601 with +08:00), one line of history.jsonl."""
    out: dict[str, object] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def history_from_json(data: dict[str, object]) -> HistoryRecord:
    """The inverse of ``history_to_json`` (for readers of history.jsonl)."""
    values = dict(data)
    at = values["reported_at"]
    if not isinstance(at, str):
        raise ValueError("reported_at must be an ISO 8601 string")
    values["reported_at"] = datetime.fromisoformat(at)
    return HistoryRecord(**values)  # type: ignore[arg-type]


def to_wire(record: HistoryRecord) -> dict[str, object]:
    """The live-stream message for a record: inspectors' reports are ``city_event``s (with the
    district/street the inspector's report establishes), everything else a ``citizen_appeal``.
    Labels (code, unit) are not on the wire: the pipeline has to find them."""
    at = record.reported_at.isoformat()
    if record.channel == "grid_inspector":
        event: dict[str, object] = {
            "kind": "city_event",
            "schema_version": 1,
            "event_id": record.record_id,
            "source": "grid_inspector",
            "reported_at": at,
            "description": record.text,
            # A stable inspector per street (crc32, not hash(): the same in every process).
            "reporter_id": f"grid-{zlib.crc32(record.street.encode()) % 9000 + 1000}",
        }
        if record.stated_district:
            event["district"] = record.stated_district
        if record.stated_street:
            event["street"] = record.stated_street
        if record.road:
            event["road"] = record.road
        return event
    appeal: dict[str, object] = {
        "kind": "citizen_appeal",
        "schema_version": 1,
        "appeal_id": record.record_id,
        "channel": record.channel,
        "received_at": at,
        "text": record.text,
    }
    if record.caller_name:
        appeal["caller_name"] = record.caller_name
    if record.caller_phone:
        appeal["caller_phone"] = record.caller_phone
    return appeal
