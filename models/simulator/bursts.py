"""Bursts: one incident reported by many people, mixed with unrelated reports.

A burst pipe or a night of construction noise is reported by 2-30 people over minutes to
hours: in their own styles and channels (the archive simulator's phrasing), and with the
place given differently (the road and number, a crossing, the landmark or 小区, only the
street; sometimes with a typo in the name). ``burst_stream`` mixes such bursts with
unrelated background reports (``generate_history``) and with hard negatives, which are
incidents of their own:

- ``near_place``: the same code at a nearby but different place (another road of the same
  street, the same road far along, another landmark), at the same time;
- ``other_problem``: the same place, a different problem (not a lookalike code), same time;
- ``recurrence``: the same problem at the same place days later (a new case).

The list is in arrival order: a few reports arrive late (a letter logged after the call, a
queue), so their ``reported_at`` runs backwards. Seeded: the same arguments give the same
stream in any process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from models.simulator.addresses import (
    _AFTER_CROSSING,
    _AFTER_NUMBER,
    _AFTER_ROAD,
    _COMMUNITY_SPOT,
    _HOME_SPOT,
    _LANDMARK_KIND,
    _LANDMARK_SPOT,
    _VILLAGE_SPOT,
    Address,
    _number,
    _weighted_pick,
)
from models.simulator.generator import (
    _CALLER_SHARE,
    _PAIRS,
    _STYLE_BY_CHANNEL,
    P_INSUFFICIENT,
    HistoryRecord,
    Simulator,
    _draw,
    generate_history,
)
from models.simulator.grammar import pick
from models.simulator.phrasing import make_caller
from models.simulator.timing import Calendar
from processors.dispatch_rule import STREET_ROUTE, route_for, unit_for
from schemas.domain import Domain

KINDS = ("burst", "near_place", "other_problem", "recurrence", "background")

# How likely a problem draws several reporters at once (relative): what many people see
# or suffer at the same moment. Codes not named here rarely do.
_BURSTINESS = {
    "E06": 1.0, "C01": 1.0, "E05": 0.8, "E08": 0.6, "G01": 0.6, "K01": 1.0, "K02": 1.0,
    "K03": 0.8, "E07": 1.0, "E02": 0.5, "A09": 0.5, "D05": 0.5, "E01": 0.5, "F01": 0.7,
    "E09": 0.6, "E04": 0.5, "C02": 0.4, "G02": 0.4, "A10": 0.4, "H02": 0.4,
}  # fmt: skip
_OTHER_BURSTINESS = 0.12
# Most reporters an incident draws, by urgency; the number is skewed towards few.
_MAX_REPORTERS = {"critical": 30, "urgent": 20, "normal": 12}
# How long an incident keeps being reported (until fixed, or the night is over), by urgency.
_DURATION_MINUTES = {"critical": (20, 90), "urgent": (40, 300), "normal": (120, 1200)}
# Codes a reporter may use for the same physical incident: an "other problem" negative is
# never one of these, nor a code of the same class, nor one reported together with it.
_LOOKALIKES = (
    "C01-G01 E05-E06 E06-K01 K01-E03 E05-K01 K02-A06 A09-D05 D03-D04 A01-A12 D01-D02 "
    "A05-F02 C02-G02 E03-C04 C02-C03 A02-C03 A03-C03 K03-D03 E09-F01"
)
P_NEAR_PLACE = 0.35
P_OTHER_PROBLEM = 0.25
P_RECURRENCE = 0.3
P_LATE = 0.06  # arrives 2-90 minutes after it was reported
P_NAME_TYPO = 0.1  # the road or place name mistyped
P_NAME_VARIANT = 0.3  # the landmark by a shorter name ("瑞泉市场" for "瑞泉农贸市场")
P_NEAR_NUMBER = 0.3  # a neighbouring house number, not the incident's own

# Input-method slips in place names: same or near sound (香港中路 -> 香岗中路).
_NAME_SLIPS = dict(
    pair.split(":")
    for pair in (
        "港:岗 香:湘 安:按 山:杉 东:冬 海:嗨 南:难 京:经 宁:凝 州:洲 江:疆 阳:杨 城:成 "
        "岛:导 湾:弯 河:和 庄:装 泉:全 华:化 兴:星 福:富 龙:隆 明:名 金:今 新:心 台:抬 "
        "平:苹 长:常 重:崇 延:沿 中:钟 西:溪 北:贝 湖:胡 林:琳 春:椿 德:得 康:糠"
    ).split()
)
# Well-known places by the short names people use.
_PLACE_ALIASES = {
    "第一海水浴场": "一浴",
    "第六海水浴场": "六浴",
    "石老人海水浴场": "石老人浴场",
    "五四广场": "五四",
    "即墨古城": "古城",
}
# The joints Gazetteer._write writes inline (so they cannot be imported).
_CROSS_FORMAL = ("与{b}交叉口", "与{b}交汇处", "与{b}路口", "、{b}路口", "与{b}十字路口")
_CROSS_CASUAL = ("和{b}路口", "跟{b}交叉口", "{b}路口", "和{b}十字路口", "与{b}交叉口")
_LANDMARK_GLUE = ("{r}上的{n}", "{r}{n}", "{r}边上的{n}", "{n}（{r}）", "{r}附近的{n}")
_SHORT_KINDS = ("市场", "工地", "厂", "公园", "广场")


@dataclass(frozen=True, slots=True)
class BurstReport:
    record: HistoryRecord
    incident_id: str | None  # None: a background report, its own case
    kind: str = "background"  # one of KINDS
    arrived_at: datetime | None = None  # when the pipeline got it (reported_at if None)


@dataclass(frozen=True, slots=True)
class Incident:
    """One problem at one place: every report of it names this place in its own way."""

    incident_id: str
    kind: str
    code: str
    loc: str
    district: str
    street: str
    owner: str | None
    road: str | None
    number: int | None
    cross_road: str | None
    name: str | None
    name_kind: str | None  # community | landmark | village | water
    start: datetime
    duration: timedelta
    reports: int


class _Bursts:
    def __init__(self, domain: Domain) -> None:
        self.sim = Simulator(domain)
        self.gaz = self.sim.gaz
        self.domain = domain
        related: dict[str, set[str]] = {}
        for pair in (*_PAIRS.split(), *_LOOKALIKES.split()):
            a, b = pair.split("-")
            related.setdefault(a, set()).add(b)
            related.setdefault(b, set()).add(a)
        self.related = {c: tuple(sorted(v)) for c, v in related.items()}

    # ---- incidents -------------------------------------------------------------------
    def _place(self, rng: random.Random, loc: str, district: str, street: str) -> dict[str, object]:
        gaz = self.gaz
        roads = gaz.roads_of[district]
        road: str | None = None
        cross: str | None = None
        number: int | None = None
        name: str | None
        kind: str | None
        if loc == "village":
            name, kind = pick(rng, gaz.villages[street]), "village"
        elif loc == "waterfront":
            waters = gaz.waters[district]
            if waters and rng.random() < 0.75:
                name = pick(rng, waters)
            else:
                name = pick(rng, gaz.stems[district]) + pick(rng, ("水库", "河", "湾"))
            kind = "water"
        else:
            road = pick(rng, roads)
            number = _number(rng)
            others = tuple(r for r in roads if r != road)
            cross = pick(rng, others) if others else None
            if loc == "residential":
                name, kind = pick(rng, gaz.communities[street]), "community"
            elif loc == "park_square" and gaz.parks[district] and rng.random() < 0.35:
                name, kind = pick(rng, gaz.parks[district]), "landmark"
            else:
                stem = pick(rng, gaz.stems[district])
                name, kind = stem + pick(rng, _LANDMARK_KIND[loc]), "landmark"
        return {
            "road": road, "number": number, "cross_road": cross, "name": name, "name_kind": kind,
        }  # fmt: skip

    def incident(self, rng: random.Random, incident_id: str, at: datetime, code: str) -> Incident:
        sim = self.sim
        ct = sim.texts[code]
        loc = _draw(rng, ct.locs, ct.loc_cum)
        names, cum = sim.district_cum[loc]
        district = _draw(rng, names, cum)
        street = sim._street(rng, district, loc)
        owner = _draw(rng, sim.owners, sim.owner_cum) if code in sim.by_owner else None
        urgency = self.domain.event_types[code].urgency
        low, high = _DURATION_MINUTES[urgency]
        return Incident(
            incident_id=incident_id,
            kind="burst",
            code=code,
            loc=loc,
            district=district,
            street=street,
            owner=owner,
            start=at,
            duration=timedelta(minutes=low + (high - low) * rng.random()),
            reports=2 + int((_MAX_REPORTERS[urgency] - 1) * rng.random() ** 2.2),
            **self._place(rng, loc, district, street),  # type: ignore[arg-type]
        )

    def _few(self, rng: random.Random) -> int:
        # Negatives draw fewer reporters: 1 most often, up to 4.
        return 1 + int(4 * rng.random() ** 2.5)

    def near_place(self, rng: random.Random, inc: Incident) -> Incident | None:
        """The same code at another place close by, at the same time."""
        gaz = self.gaz
        street = inc.street
        if rng.random() < 0.3:
            street = pick(rng, gaz.streets_of[inc.district])
        if inc.loc == "village" and street not in gaz.villages:
            street = inc.street
        place = self._place(rng, inc.loc, inc.district, street)
        for _ in range(5):
            # Another place: never the incident's own named place (a 小区 pool is small).
            if place["name"] is None or place["name"] != inc.name:
                break
            place = self._place(rng, inc.loc, inc.district, street)
        if place["name"] is not None and place["name"] == inc.name:
            return None
        if inc.road is not None and rng.random() < 0.3:
            # The same road, far along: another stretch, another number.
            shift = rng.randint(40, 300) * (1 if rng.random() < 0.5 else -1)
            number = abs((inc.number or 1) + shift) or 1
            place = {**place, "road": inc.road, "number": number}
        if {place["road"], place["cross_road"]} == {inc.road, inc.cross_road}:
            place = {**place, "cross_road": None}  # the incident's crossing is its place
        offset = inc.duration * (rng.random() - 0.3)
        return replace(
            inc,
            incident_id=f"{inc.incident_id}-near",
            kind="near_place",
            street=street,
            start=inc.start + offset,
            reports=self._few(rng),
            **place,  # type: ignore[arg-type]
        )

    def other_problem(self, rng: random.Random, inc: Incident) -> Incident | None:
        """A different problem at the same place, at the same time."""
        event_class = self.domain.event_types[inc.code].event_class
        related = self.related.get(inc.code, ())
        options = tuple(
            c
            for c, ct in self.sim.texts.items()
            if inc.loc in ct.locs
            and c not in related
            and self.domain.event_types[c].event_class != event_class
        )
        if not options:
            return None
        code = pick(rng, options)
        owner = (
            _draw(rng, self.sim.owners, self.sim.owner_cum) if code in self.sim.by_owner else None
        )
        return replace(
            inc,
            incident_id=f"{inc.incident_id}-other",
            kind="other_problem",
            code=code,
            owner=owner,
            start=inc.start + inc.duration * rng.random(),
            reports=self._few(rng),
        )

    def recurrence(self, rng: random.Random, inc: Incident) -> Incident:
        """The same problem at the same place, days after the first one was over."""
        later = inc.duration + timedelta(days=2 + 4 * rng.random())
        return replace(
            inc,
            incident_id=f"{inc.incident_id}-again",
            kind="recurrence",
            start=inc.start + later,
            reports=self._few(rng),
        )

    # ---- reports ---------------------------------------------------------------------
    def report(self, rng: random.Random, inc: Incident, at: datetime) -> dict[str, object]:
        sim, domain = self.sim, self.domain
        ct = sim.texts[inc.code]
        route = route_for(domain, inc.code, inc.loc, inc.owner)
        true_unit = unit_for(domain, route, inc.district, inc.street).unit or ""
        need = (
            "street" if route == STREET_ROUTE else "district" if route.startswith("D:") else "none"
        )
        channel = sim._channel(rng, at, ct)
        styles, style_cum = _STYLE_BY_CHANNEL[channel]
        style = _draw(rng, styles, style_cum)
        sufficient = need == "none" or rng.random() >= P_INSUFFICIENT
        formal = style in ("operator", "inspector", "letter") or (
            style == "web_form" and rng.random() < 0.5
        )
        addr = self._address(rng, inc, need, sufficient, formal, ct.home)
        urgency = domain.event_types[inc.code].urgency
        second, second_first = sim._second(rng, inc.code, inc.loc, urgency)
        caller = make_caller(rng) if rng.random() < _CALLER_SHARE.get(channel, 0.0) else None
        text = sim._text(
            rng, ct, inc.loc, urgency, inc.owner, second, second_first, addr, style, caller
        )
        text = self._typo(rng, text, addr)
        return {
            "text": text,
            "channel": channel,
            "style": style,
            "reported_at": at,
            "code": inc.code,
            "second_code": second.code if second else None,
            "district": inc.district,
            "street": inc.street,
            "road": addr.road,
            "place": addr.place,
            "location_type": inc.loc,
            "owner": inc.owner,
            "address_form": addr.form,
            "address_sufficient": sufficient,
            "true_unit": true_unit,
            "unit": true_unit,
            "mis_dispatched": False,
            "route": route,
            "stated_district": addr.stated_district,
            "stated_street": addr.stated_street,
            "caller_name": caller.name if caller else None,
            "caller_phone": caller.phone if caller else None,
        }

    def _forms(self, inc: Incident, need: str, sufficient: bool) -> dict[str, float]:
        weights = self.gaz.forms_for(inc.loc, inc.district)
        available = {
            "road_number": inc.road is not None,
            "district_road": inc.road is not None,
            "road_only": inc.road is not None,
            "crossing": inc.road is not None and inc.cross_road is not None,
            "community": inc.name_kind == "community",
            "landmark": inc.name_kind in ("landmark", "water"),
            "town_village": inc.name_kind == "village",
        }
        out = {f: w for f, w in weights.items() if available.get(f, True)}
        if not sufficient and need == "street":
            out = {f: w for f, w in out.items() if f not in ("street_only", "community")}
        if not sufficient and need == "district":
            out = {f: w for f, w in out.items() if f in ("road_only", "landmark", "none")}
        return out or {"none": 1.0}

    def _address(
        self,
        rng: random.Random,
        inc: Incident,
        need: str,
        sufficient: bool,
        formal: bool,
        home: bool,
    ) -> Address:
        gaz = self.gaz
        form = _weighted_pick(rng, self._forms(inc, need, sufficient))
        loc = inc.loc
        road: str | None = None
        place: str | None = None
        if form == "road_number" and inc.road is not None:
            road = inc.road
            number = inc.number or 1
            if rng.random() < P_NEAR_NUMBER:
                number = max(1, number + rng.choice((-4, -2, 2, 4)))
            if loc == "residential" and home and rng.random() < 0.85:
                yard = pick(rng, ("", "院", "小区"))
                body = f"{road}{number}号{yard}{gaz._ph(_HOME_SPOT).pick(rng)}"
            else:
                body = f"{road}{number}号{gaz._spot(rng, _AFTER_NUMBER, loc)}"
        elif form == "crossing" and inc.road is not None and inc.cross_road is not None:
            road = inc.road
            place = f"{inc.road}与{inc.cross_road}交叉口"
            first, second = (
                (inc.road, inc.cross_road) if rng.random() < 0.7 else (inc.cross_road, inc.road)
            )
            joint = pick(rng, _CROSS_FORMAL if formal else _CROSS_CASUAL)
            body = f"{first}{joint.format(b=second)}{gaz._spot(rng, _AFTER_CROSSING, loc)}"
        elif form == "community" and inc.name is not None:
            place = inc.name
            tail = pick(rng, ("", "小区", "")) if not place.endswith("小区") else ""
            spot_table = _HOME_SPOT if home and rng.random() < 0.85 else _COMMUNITY_SPOT
            spot = gaz._ph(spot_table).pick(rng)
            if inc.road is not None and rng.random() < 0.25:
                road = inc.road
                body = f"{road}{inc.number}号{place}{tail}{spot}"
            else:
                body = f"{place}{tail}{spot}"
        elif form == "landmark" and inc.name is not None:
            place = inc.name
            said = self._name_as_said(rng, inc)
            table = _LANDMARK_SPOT.get(loc)
            spot = gaz._ph(table).pick(rng) if table else ""
            if inc.road is not None and rng.random() < 0.6:
                road = inc.road
                body = f"{pick(rng, _LANDMARK_GLUE).format(r=road, n=said)}{spot}"
            else:
                body = f"{said}{spot}"
        elif form == "town_village" and inc.name is not None:
            place = inc.name
            spot = gaz._ph(_VILLAGE_SPOT[loc]).pick(rng) if loc in _VILLAGE_SPOT else ""
            body = f"{place}{spot}"
        elif form in ("district_road", "road_only") and inc.road is not None:
            road = inc.road
            body = f"{road}{gaz._spot(rng, _AFTER_ROAD, loc)}"
        else:
            form = form if form in ("street_only", "district_only") else "none"
            body = gaz._standalone(rng, loc, formal)

        add_street = form in ("community", "street_only", "town_village")
        add_district = form in ("district_road", "district_only")
        gives_district = road is not None and len(self.domain.road_districts[road]) == 1
        if sufficient:
            if need == "street":
                add_street = True
            if need == "district" and not (gives_district or add_street or add_district):
                add_district = rng.random() < 0.6
                add_street = not add_district
            if form not in ("none", "road_only") and rng.random() < (0.5 if formal else 0.2):
                add_district = True
            if form in ("road_number", "crossing", "landmark") and not add_street:
                add_street = rng.random() < (0.3 if formal else 0.1)
        if form == "road_only" and (add_street or add_district):
            form, add_district = "district_road", True
        if form in ("none", "district_only") and add_street:
            form = "street_only"
        text = gaz._decorate(
            rng, form, body, inc.district, inc.street, add_district, add_street, formal
        )
        district_known = add_district or add_street or gives_district
        return Address(
            form=form,
            text=text,
            road=road,
            place=place,
            stated_district=inc.district if district_known else None,
            stated_street=inc.street if add_street else None,
        )

    def _name_as_said(self, rng: random.Random, inc: Incident) -> str:
        name = inc.name or ""
        if rng.random() >= P_NAME_VARIANT:
            return name
        alias = _PLACE_ALIASES.get(name)
        if alias is not None:
            return alias
        if name.endswith("小区"):
            return name.removesuffix("小区")
        stem = self.gaz.stems[inc.district]
        for short in _SHORT_KINDS:
            # "瑞泉农贸市场" -> "瑞泉市场", "瑞泉地块项目工地" -> "瑞泉工地"
            if name.endswith(short) and name[:2] in stem and len(name) > 2 + len(short):
                return name[:2] + short
        return name

    def _typo(self, rng: random.Random, text: str, addr: Address) -> str:
        """One slip in the road's or the place's name, as typed (the record keeps the
        right name: it is what the reporter meant)."""
        if rng.random() >= P_NAME_TYPO:
            return text
        names = [n for n in (addr.road, addr.place) if n and "交叉口" not in n and n in text]
        if not names:
            return text
        name = pick(rng, tuple(names))
        spots = [i for i, ch in enumerate(name[:-1]) if ch in _NAME_SLIPS]
        if spots and rng.random() < 0.8:
            at = spots[int(rng.random() * len(spots))]
            wrong = name[:at] + _NAME_SLIPS[name[at]] + name[at + 1 :]
        elif len(name) >= 4:
            # Two characters swapped (a slip of the fingers on a phone).
            at = 1 + int(rng.random() * (len(name) - 3))
            wrong = name[:at] + name[at + 1] + name[at] + name[at + 2 :]
        else:
            return text
        return text.replace(name, wrong, 1)


def _report_times(rng: random.Random, inc: Incident) -> list[datetime]:
    # The first report opens the incident; the others come front-loaded over its duration
    # (most people call early, a few passers-by hours later).
    offsets = [timedelta(0)] + [inc.duration * rng.random() ** 1.6 for _ in range(inc.reports - 1)]
    return sorted(inc.start + o for o in offsets)


def _arrival(rng: random.Random, at: datetime) -> datetime:
    if rng.random() < P_LATE:
        return at + timedelta(minutes=2 + 88 * rng.random())
    return at + timedelta(seconds=30 * rng.random())


def burst_stream(
    domain: Domain,
    seed: int,
    n_incidents: int,
    background: int,
    *,
    start: date = date(2025, 11, 3),
    days: int = 14,
) -> list[BurstReport]:
    """``n_incidents`` bursts (each with its hard negatives) and ``background`` unrelated
    reports over ``days`` days from ``start``, in arrival order. Record ids (``b<seed>-N``)
    follow the arrival order, so they say nothing about incidents."""
    if n_incidents < 0 or background < 0:
        raise ValueError("n_incidents and background must be >= 0")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    bursts = _Bursts(domain)
    rng = random.Random(seed)
    end = start + timedelta(days=days - 1)
    calendar = Calendar(bursts.sim.codes, start, end)
    incidents: list[Incident] = []
    width = max(4, len(str(n_incidents)))
    while len(incidents) < n_incidents:
        at, code = calendar.draw(rng)
        if rng.random() >= _BURSTINESS.get(code, _OTHER_BURSTINESS):
            continue
        inc = bursts.incident(rng, f"i{seed}-{len(incidents):0{width}d}", at, code)
        incidents.append(inc)
    negatives: list[Incident] = []
    for inc in incidents:
        if rng.random() < P_NEAR_PLACE:
            near = bursts.near_place(rng, inc)
            if near is not None:
                negatives.append(near)
        if rng.random() < P_OTHER_PROBLEM:
            other = bursts.other_problem(rng, inc)
            if other is not None:
                negatives.append(other)
        if rng.random() < P_RECURRENCE:
            negatives.append(bursts.recurrence(rng, inc))

    drafts: list[tuple[datetime, datetime, int, HistoryRecord, str | None, str]] = []
    for inc in (*incidents, *negatives):
        for at in _report_times(rng, inc):
            fields = bursts.report(rng, inc, at)
            record = HistoryRecord(record_id="", **fields)  # type: ignore[arg-type]
            drafts.append((_arrival(rng, at), at, len(drafts), record, inc.incident_id, inc.kind))
    for record in generate_history(domain, background, seed=seed, start=start, end=end):
        at = record.reported_at
        drafts.append((_arrival(rng, at), at, len(drafts), record, None, "background"))
    drafts.sort(key=lambda d: (d[0], d[1], d[2]))
    width = max(6, len(str(len(drafts))))
    return [
        BurstReport(
            record=replace(record, record_id=f"b{seed}-{k:0{width}d}"),
            incident_id=incident_id,
            kind=kind,
            arrived_at=arrived,
        )
        for k, (arrived, _, _, record, incident_id, kind) in enumerate(drafts)
    ]
