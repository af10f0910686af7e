"""Duplicate merging: reports of the same problem at the same place become one case.

Pure: reports and state in, case ids and new state out. The live agent keeps one
``CaseState`` per partition key (``case_key``) in a Faust table; the batch command and the
evaluation run the same ``CaseIndex``.

- The key is the report's district and its *merge class*: a group of codes a classifier
  (or a reporter) confuses for one incident (C01 construction noise and G01 noise; A01
  garbage and A12 overflowing bins; E05/E06/K01 water on or under the road), every other
  code alone. Reports of one incident meet on one partition even when their codes differ
  within the class; a different problem at the same place never shares their state.
- Within a key, a report joins an open case when the places agree and the time fits the
  class's window (the gap to the case's nearest report, and the case's whole span):
  - strong evidence: the same named place (小区, landmark, village; short names, aliases,
    traditional characters and swapped characters tolerated), the same crossing, or the
    same road and a house number within ``number_tolerance``;
  - weaker evidence: the same road only, or the same street only (one side vague, or one
    names a road and the other a place). It reaches less far in time, and joins only the
    one case that fits (or one with ``dominance`` times the reports of the next);
  - never: two different named places, roads, crossings, far-apart numbers, streets; a
    sibling code of the class without strong evidence.
- A case's id is the id of the report that opened it (the first to arrive), so ids never
  change once published. A report that strongly matches several open cases shows they are
  one incident: they are folded into the largest, and ``Step.absorbed`` names the ids that
  now stand for it (publish them as case merges; the batch path relabels).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from schemas.domain import Domain
from schemas.records import DispatchDecision

STATE_VERSION = 1
# The city's clock: hotspot days are local days.
CITY_TZ = timezone(timedelta(hours=8))
# A report's text is searched for place names up to here (a decision carries 1,000).
TEXT_CHARS = 1000

# Place evidence, weakest to strongest.
CONFLICT, NOTHING, DISTRICT, STREET, ROAD, STRONG = -1, 0, 1, 2, 3, 4
LEVEL_NAMES = {
    CONFLICT: "conflict", NOTHING: "none", DISTRICT: "district", STREET: "street",
    ROAD: "road", STRONG: "strong",
}  # fmt: skip

# Bounds on what a case remembers, so that hostile input cannot grow the state.
_MAX_NAMES, _MAX_ROADS, _MAX_NUMBERS, _MAX_STREETS, _MAX_CODES = 6, 6, 8, 3, 6


class MergeStateError(ValueError):
    """A stored case state is not in the expected shape."""


# ---- reports -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MergeReport:
    """What merging needs of a report: the dispatch decision's code and place, its time."""

    report_id: str
    at: datetime | None  # aware; None: no usable time (the report stays its own case)
    code: str  # "" when no model decided
    district: str | None = None
    street: str | None = None
    road: str | None = None
    place: str | None = None
    text: str = ""
    channel: str = ""


def report_from_decision(decision: DispatchDecision) -> MergeReport:
    return MergeReport(
        report_id=decision.input_id,
        at=decision.received_at,
        code=decision.code,
        district=decision.district,
        street=decision.street,
        road=decision.road,
        place=decision.place,
        text=decision.text,
        channel=decision.channel or "",
    )


# ---- policy --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MergeClass:
    """Codes merged with each other, and how long their cases stay open."""

    name: str
    codes: frozenset[str]
    window: timedelta  # the largest gap between a report and its case's nearest report
    max_span: timedelta  # the longest a case runs from its first report to its last


# Codes that describe the same incident: the dispatch classifier's confusions on
# simulated reports (A01/A12, D01/D02, D03/D04, A09/D05, C03/A02/A03, C04/E03, A05/F02),
# night construction noise that is also "noise" (C01/G01), and water on or under the road
# (a burst pipe is reported as no water, water on the road, or the road caving in).
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "garbage": ("A01", "A12"),
    "dirt": ("A02", "A03", "C03"),
    "green": ("A05", "F02"),
    "vending": ("D01", "D02"),
    "parking": ("D03", "D04"),
    "fumes": ("A09", "D05"),
    "roadworks": ("C04", "E03"),
    "noise": ("C01", "G01"),
    "water": ("E05", "E06", "K01"),
}
# (window, max_span) by urgency: a fire is over within the hour, a burst pipe within the
# morning, a noisy site is one night (a report two nights later is a new case).
DEFAULT_WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "critical": (timedelta(hours=1), timedelta(hours=6)),
    "urgent": (timedelta(hours=2), timedelta(hours=12)),
    "normal": (timedelta(hours=24), timedelta(hours=48)),
}
UNCLASSIFIED = MergeClass("unclassified", frozenset(), timedelta(hours=2), timedelta(hours=6))

# Well-known places by the names people use (Qingdao); a deployment passes its own.
QINGDAO_ALIASES: tuple[tuple[str, str], ...] = (
    ("一浴", "第一海水浴场"),
    ("六浴", "第六海水浴场"),
    ("石老人浴场", "石老人海水浴场"),
    ("五四", "五四广场"),
    ("古城", "即墨古城"),
    ("世园会", "世博园"),
    ("台东步行街", "台东商业步行街"),
)


@dataclass(frozen=True, slots=True)
class MergePolicy:
    classes: tuple[MergeClass, ...]
    unclassified: MergeClass = UNCLASSIFIED
    # How late a report may arrive (behind the newest one seen for its key) and still
    # find its case open.
    grace: timedelta = timedelta(hours=2)
    # Weaker evidence reaches less far in time: a report that shares only the road with a
    # case, or only the street, joins it only this close to the case's nearest report
    # (and only when it is the one case that fits, or by far the largest).
    road_window: timedelta = timedelta(hours=4)
    street_window: timedelta = timedelta(hours=1)
    # ...or this share of the class's window, if longer (a noisy site is reported all
    # night, a burst pipe within the hour).
    road_share: float = 1 / 3
    street_share: float = 1 / 12
    # When weaker evidence fits several cases: the largest takes the report if it has this
    # many times the reports of the next.
    dominance: float = 2.0
    # House numbers this close on the same road are one place.
    number_tolerance: int = 10
    # Open cases kept per key at most (the oldest go first): the state's size bound.
    max_cases: int = 2000
    aliases: tuple[tuple[str, str], ...] = QINGDAO_ALIASES
    # False: one key per class citywide (no report is lost to an unknown district, at the
    # price of larger state per key).
    by_district: bool = True
    # The domain's roads: a road read from free text is one of them, or not trusted (a
    # typo, "香港钟路", may be 香港中路 or 香港西路: it must not contradict either).
    roads: frozenset[str] = field(default=frozenset(), repr=False)
    # Traditional -> simplified characters (``str.translate`` table), so that 枫林山莊 is
    # 枫林山庄; the caller loads it (``merge_batch.simplify_table``): no I/O here.
    char_map: Mapping[int, str] = field(default_factory=dict, repr=False, compare=False)
    _by_code: dict[str, MergeClass] = field(init=False, repr=False, compare=False, hash=False)
    _alias_map: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_code: dict[str, MergeClass] = {}
        names: set[str] = set()
        for cls in self.classes:
            if cls.name in names or cls.name == self.unclassified.name:
                raise ValueError(f"merge class {cls.name!r} is defined twice")
            names.add(cls.name)
            if cls.window <= timedelta(0) or cls.max_span < cls.window:
                raise ValueError(f"merge class {cls.name!r}: need 0 < window <= max_span")
            for code in cls.codes:
                if code in by_code:
                    raise ValueError(
                        f"code {code} is in merge classes {by_code[code].name!r} and {cls.name!r}"
                    )
                by_code[code] = cls
        object.__setattr__(self, "_by_code", by_code)
        aliases = {_clean(a): _clean(b) for a, b in self.aliases if _clean(a) and _clean(b)}
        object.__setattr__(self, "_alias_map", aliases)

    def class_of(self, code: str) -> MergeClass | None:
        """The code's merge class; the unclassified class for no code; None for a code the
        policy does not know (such a report stays its own case)."""
        if not code:
            return self.unclassified
        return self._by_code.get(code)

    def simplified(self, text: str) -> str:
        return text.translate(self.char_map) if self.char_map else text

    def known_road(self, read: str) -> str | None:
        """A road read from text as the domain names it; None when unsure. Without a road
        list, the text as read."""
        if len(read) < 2:
            return None
        if not self.roads or read in self.roads:
            return read
        # Words before it ("反映香港中路"), or its section left out ("黑龙江中路").
        ends = [r for r in self.roads if read.endswith(r)]
        if ends:
            return max(ends, key=len)
        starts = [r for r in self.roads if r.startswith(read) and r[len(read) :] in _SECTIONS]
        if len(starts) == 1:
            return starts[0]
        slips = [r for r in self.roads if len(r) >= 4 and _damerau_at_most_one(read[-len(r) :], r)]
        return slips[0] if len(slips) == 1 else None

    def canonical_name(self, name: str) -> str:
        return self._alias_map.get(name, name)

    @classmethod
    def default(
        cls,
        domain: Domain,
        groups: Mapping[str, tuple[str, ...]] = DEFAULT_GROUPS,
        windows: Mapping[str, tuple[timedelta, timedelta]] = DEFAULT_WINDOWS,
        **options: Any,
    ) -> MergePolicy:
        """Groups of lookalike codes, every other code of the domain alone; each class's
        window is the longest its codes' urgencies allow."""
        classes: list[MergeClass] = []
        grouped: set[str] = set()
        for name, codes in groups.items():
            known = tuple(c for c in codes if c in domain.event_types)
            if not known:
                continue
            grouped.update(known)
            spans = [windows[domain.event_types[c].urgency] for c in known]
            classes.append(
                MergeClass(
                    name, frozenset(known), max(w for w, _ in spans), max(s for _, s in spans)
                )
            )
        for code, event_type in domain.event_types.items():
            if code not in grouped:
                window, span = windows[event_type.urgency]
                classes.append(MergeClass(code, frozenset({code}), window, span))
        options.setdefault("roads", frozenset(domain.road_districts))
        return cls(classes=tuple(classes), **options)


def case_key(report: MergeReport, policy: MergePolicy) -> str | None:
    """The partition key that related reports share: ``"<district>|<merge class>"``
    (``"?"`` for an unknown district, ``"*"`` when the policy keys citywide). None: the
    report cannot be merged (no usable time, or a code the policy does not know)."""
    if instant(report.at) is None:
        return None
    merge_class = policy.class_of(report.code)
    if merge_class is None:
        return None
    region = (report.district or "?") if policy.by_district else "*"
    return f"{region}|{merge_class.name}"


# ---- place signatures ----------------------------------------------------------------------
_DROP = re.compile(r"[\s\u3000,.;:!?()\[\]{}<>\"'，。；：！？、（）【】《》“”‘’…—\-~·/\\|]+")
# A house number on a road ("香港中路18号"), not a building in a 小区 ("3号楼"), a metro
# line or a phone number.
_NUMBER = re.compile(r"(?<!\d)(\d{1,4})号(?![楼线])")
_ROAD = r"[\u4e00-\u9fff]{1,7}?(?:大道|大街|路|街)"
_CROSSING = re.compile(
    rf"({_ROAD})(?:与|和|跟|同|、)?({_ROAD})(?:交叉口|交汇处|十字路口|路口|交界|交口)"
)
# Characters before a road name that are not part of it ("在香港中路", "市南区香港中路").
_ROAD_LEAD_STOPS = "在的于是到往从区镇县市号与和跟同、称映"
_SECTIONS = ("东段", "西段", "南段", "北段", "中段")
# A housing estate is the same with or without the word (海韵花园 / 海韵花园小区).
_DROPPED_ENDINGS = ("小区",)
# Kinds of named place, longest first: a name is a stem and one of these ("瑞泉农贸市场").
PLACE_KINDS: tuple[str, ...] = tuple(
    sorted(
        {
            "小区", "花园", "家园", "新村", "公寓", "名苑", "花苑", "华庭", "雅居", "嘉园",
            "山庄", "新城", "国际", "公馆", "苑", "府", "大厦", "大楼", "广场", "公园", "游园",
            "市场", "农贸市场", "菜市场", "海鲜市场", "集贸市场", "批发市场", "夜市", "早市",
            "商城", "商场", "购物中心", "商业街", "步行街", "超市", "酒店", "宾馆", "饭店",
            "银行", "医院", "卫生院", "中学", "小学", "学校", "幼儿园", "加油站", "工地",
            "项目工地", "地块项目工地", "工业园", "产业园", "物流园", "科技园", "厂", "水库",
            "海水浴场", "浴场", "码头", "村",
        },
        key=len,
        reverse=True,
    )
)  # fmt: skip
# Words that make a name generic, not a place ("一居民小区", "辖区某商场", "对面工地").
_GENERIC_PARTS: tuple[str, ...] = tuple(
    sorted(
        {
            "辖区", "一", "某", "这", "那", "这个", "那个", "一个", "本", "该", "各", "附近",
            "周边", "对面", "旁边", "东边", "西边", "南边", "北边", "东侧", "西侧", "南侧", "北侧",
            "门口", "楼下", "楼前", "楼后", "主路上", "路边", "路上", "院内", "院里", "里面",
            "宿舍院", "家属院", "宿舍", "居民", "住宅", "老旧", "新建", "在建", "施工", "建筑",
            "我们", "俺们", "我家", "俺家", "来电人", "所在", "居住的", "住处", "的", "集贸",
            "农贸", "海鲜", "批发", "商业", "城中", "大型", "小型", "露天", "开放式", "无物业",
            "沿街", "街心", "文化", "体育", "二期", "项目", "地块", "安置房", "棚改", "拆迁",
            "拆除", "底商", "商铺", "这块儿", "那块儿", "块儿", "中心",
        },
        key=len,
        reverse=True,
    )
)  # fmt: skip
# Characters a name does not cross when read leftwards from its kind.
_NAME_STOPS = frozenset(
    "的在是有了和与及或对把被到从往于向给让将就都也还又很我你他她它们这那个条位称说映现住要请"
    "已经正因为所以但而且并号旁附侧近边外内门口处某区市镇县路街道省"
)
_ROAD_ENDINGS = ("路", "街", "道", "段", "大道", "巷")
# A name without a known kind that ends like this is a thing, not a place ("十字路口",
# "雨水口", "明沟"), or a road.
_NOT_NAME_ENDINGS = (*_ROAD_ENDINGS, "口", "沟", "井", "盖", "线", "杆", "灯", "桥", "门", "楼")
_NOT_NAMES = frozenset({"小区", "院子", "宿舍", "楼道", "地下车库", "车库", "车棚"})
# A gate or a side of a place is the place ("天泰水岸南门").
_PART_ENDINGS = ("东门", "西门", "南门", "北门", "正门", "大门", "门口", "院内", "院里", "里面")
# Kinds read from free text: one-character kinds (村, 厂, 苑) end too many other words.
_TEXT_KINDS = tuple(k for k in PLACE_KINDS if len(k) >= 2 and k not in ("小区", "广场"))
# Characters of the reporter's own words, never of a place's name.
_NOT_IN_NAMES = frozenset(
    "问题希望督促投诉标题诉求巡查进出反映存在发现要求请来电员户我俺们你他这那个一某些块儿格事管址"
    "点置损复清运能不没有就还都很太了吧啊呢吗着过被把让给对从向往到在是的地得巷胡沿线影响铺"
)
_MAX_STEM = 4


def _clean(text: str) -> str:
    return _DROP.sub("", unicodedata.normalize("NFKC", text or "")).lower()


def _kind_of(name: str) -> str | None:
    return next((k for k in PLACE_KINDS if name.endswith(k)), None)


def is_generic_name(name: str) -> bool:
    """A kind with no name of its own ("集贸市场", "一居民小区", "楼前小区"), or a road."""
    kind = _kind_of(name)
    if kind is None:
        return (
            len(name) < 2
            or name.endswith(_NOT_NAME_ENDINGS)
            or name in _NOT_NAMES
            or any(ch in _NOT_IN_NAMES or ch in "路街边" for ch in name)
        )
    stem = name[: -len(kind)]
    if stem.endswith(_ROAD_ENDINGS) or stem.endswith(("街道", "镇")):
        return True  # "书院路农贸市场", "隐珠街道小区": the road's or the street's market
    changed = True
    while stem and changed:
        changed = False
        for part in _GENERIC_PARTS:
            if stem.startswith(part):
                stem, changed = stem[len(part) :], True
                break
    return len(stem) < 2 if kind not in ("村", "苑", "府", "厂") else len(stem) < 1


def _name_char(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" or char.isascii() and char.isalnum()


def _inner_place(name: str) -> str | None:
    """The housing estate a spot lies in, when a name runs on past it."""
    for kind in _DROPPED_ENDINGS:
        at = name.find(kind)
        if 0 < at and at + len(kind) < len(name):
            return name[: at + len(kind)]
    return None


def names_close(a: str, b: str) -> bool:
    """One slip apart (3+ characters): maybe one place mistyped, maybe two (曹戈庄村 /
    袁戈庄村); neither the same nor different."""
    return min(len(a), len(b)) >= 3 and _damerau_at_most_one(a, b)


def normalise_name(name: str, policy: MergePolicy) -> str:
    """A place name as compared: NFKC, simplified characters, no spaces or punctuation,
    aliases resolved, a gate or side and a trailing 小区 dropped; "" for a generic name."""
    clean = "".join(ch for ch in policy.simplified(_clean(name)) if _name_char(ch))
    inner = _inner_place(clean)
    if inner is not None:
        clean = inner  # "和平小区中心广场": a spot inside 和平小区
    for part in _PART_ENDINGS:
        if clean.endswith(part) and len(clean) - len(part) >= 2:
            clean = clean[: -len(part)]
            break
    clean = policy.canonical_name(clean)
    if is_generic_name(clean):
        return ""
    for ending in _DROPPED_ENDINGS:
        if clean.endswith(ending) and len(clean) - len(ending) >= 2:
            clean = policy.canonical_name(clean[: -len(ending)])
    return "" if is_generic_name(clean) else clean


def place_words(text: str, policy: MergePolicy, limit: int = 2) -> tuple[str, ...]:
    """Named places in a text, read from their kinds ("万旺超市", "德韵地块项目工地"), for
    reports in which address analysis found none. Strict on purpose: a name must start
    after a clear boundary (punctuation, 的, 在, a district...), its stem be 2-4
    characters none of which is a reporter's word (问题, 希望, 投诉...)."""
    clean = policy.simplified(unicodedata.normalize("NFKC", text[:TEXT_CHARS]))
    found: list[tuple[int, str]] = []
    for kind in _TEXT_KINDS:
        at = clean.find(kind)
        while at != -1 and len(found) < 8:
            start = at
            while start > 0 and at - start <= _MAX_STEM and not _boundary(clean[start - 1]):
                start -= 1
            stem = clean[start:at]
            bounded = start == 0 or _boundary(clean[start - 1])
            if bounded and 2 <= len(stem) <= _MAX_STEM and not set(stem) & _NOT_IN_NAMES:
                name = normalise_name(stem + kind, policy)
                if name and not any(name in f or f in name for _, f in found):
                    found.append((start, name))
            at = clean.find(kind, at + 1)
    return tuple(name for _, name in sorted(found)[:limit])


def _boundary(char: str) -> bool:
    return char in _NAME_STOPS or not ("\u4e00" <= char <= "\u9fff")


def _trim_road(raw: str) -> str:
    cut = max(raw.rfind(ch) for ch in _ROAD_LEAD_STOPS)
    return raw[cut + 1 :] if cut >= 0 else raw


@dataclass(frozen=True, slots=True)
class PlaceSignature:
    """Where a report (or a case) says the problem is, normalised for comparison."""

    district: str | None
    streets: tuple[str, ...]
    roads: tuple[str, ...]  # the road, and both roads of a crossing
    names: tuple[str, ...]  # named places (小区, landmark, village), normalised
    numbers: tuple[int, ...]  # house numbers read from the text
    crossings: tuple[str, ...] = ()  # "A|B", the two roads in order

    @property
    def specific(self) -> bool:
        """Names a road or a place (more than a street or district)."""
        return bool(self.roads or self.names)


def place_signature(report: MergeReport, policy: MergePolicy) -> PlaceSignature:
    text = unicodedata.normalize("NFKC", report.text[:TEXT_CHARS])
    known = _clean(report.road or "")
    roads: list[str] = [known] if known else []
    crossings: list[str] = []
    for source in (report.place or "", text):
        for a, b in _CROSSING.findall(_clean(source)):
            # Read with words before it ("来电人反映香港中路"): the analysis's road if it is
            # that one.
            read = [_trim_road(r) for r in (a, b)]
            read = [known if known and _same_road(r, known) else r for r in read]
            pair = [policy.known_road(r) for r in read]
            if pair[0] and pair[1] and not _same_road(pair[0], pair[1]):
                roads += [pair[0], pair[1]]
                crossings.append("|".join(sorted((pair[0], pair[1]))))
    names: list[str] = []
    if report.place and not _CROSSING.search(_clean(report.place)):
        name = normalise_name(report.place, policy)
        if name:
            names.append(name)
    if not names:
        names += place_words(text, policy)
    numbers = sorted({int(n) for n in _NUMBER.findall(text)})
    return PlaceSignature(
        district=report.district or None,
        streets=(report.street,) if report.street else (),
        roads=_unique(roads)[:_MAX_ROADS],
        names=tuple(names),
        numbers=tuple(numbers[:_MAX_NUMBERS]),
        crossings=_unique(crossings)[:_MAX_ROADS],
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _same_road(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) < 3:
        return False
    # A road read with words before it ("反映香港中路"), or named without its section
    # ("黑龙江中路" for "黑龙江中路北段").
    return long.endswith(short) or (long.startswith(short) and long[len(short) :] in _SECTIONS)


def _damerau_at_most_one(a: str, b: str) -> bool:
    """Equal, or one substitution, insertion, deletion or swap of neighbours apart."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )  # fmt: skip
    short, long = (a, b) if la < lb else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    return short[i:] == long[i + 1 :]


def names_match(a: str, b: str) -> bool:
    """Two normalised place names for one place: equal; one within the other (4+
    characters); the same name with a shorter kind ("瑞泉市场" / "瑞泉农贸市场"); or one
    slip apart (5+ characters; 4 for two characters swapped). Shorter names one character
    apart are often two places (曹戈庄村 / 袁戈庄村)."""
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) >= 4 and short in long:
        return True
    common = 0
    while common < len(short) and short[common] == long[common]:
        common += 1
    if common >= 2:
        rest_s, rest_l = short[common:], long[common:]
        if rest_l.endswith(rest_s) or rest_s.endswith(rest_l):
            return True
    if len(short) >= 5:
        return _damerau_at_most_one(a, b)
    return len(a) == len(b) == 4 and _swapped(a, b)


def _swapped(a: str, b: str) -> bool:
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]


def _same_crossing(a: str, b: str) -> bool:
    x1, _, x2 = a.partition("|")
    y1, _, y2 = b.partition("|")
    return (_same_road(x1, y1) and _same_road(x2, y2)) or (
        _same_road(x1, y2) and _same_road(x2, y1)
    )


def fuzzy_in(name: str, text: str, *, min_slip_chars: int = 4) -> bool:
    """``name`` in ``text``, exactly or (``min_slip_chars``+ characters) with one slip."""
    if not name:
        return False
    if name in text:
        return True
    size = len(name)
    if size < max(min_slip_chars, 3):
        return False
    # A single slip leaves one of three parts intact: look for the parts, then check the
    # windows around them (no scan of the whole text per name).
    cuts = (0, size // 3, 2 * size // 3, size)
    starts: set[int] = set()
    for k in range(3):
        part = name[cuts[k] : cuts[k + 1]]
        if not part:
            continue
        at = text.find(part)
        while at != -1 and len(starts) < 64:
            for start in (at - cuts[k] - 1, at - cuts[k], at - cuts[k] + 1):
                if start >= 0:
                    starts.add(start)
            at = text.find(part, at + 1)
    for start in sorted(starts):
        for width in (size - 1, size, size + 1):
            if _damerau_at_most_one(name, text[start : start + width]):
                return True
    return False


def searchable_text(text: str, policy: MergePolicy) -> str:
    """A report's text as ``place_level`` searches it for a case's names and roads."""
    return policy.simplified(_clean(text[:TEXT_CHARS]))


def place_level(
    case: PlaceSignature, report: PlaceSignature, report_text: str, policy: MergePolicy
) -> int:
    """How well a report's place agrees with a case's (CONFLICT ... STRONG);
    ``report_text`` is ``searchable_text`` of the report (computed once per report)."""
    if case.district and report.district and case.district != report.district:
        return CONFLICT
    if case.streets and report.streets and not set(case.streets) & set(report.streets):
        return CONFLICT
    text = report_text  # searchable_text() of the report
    name_match = any(names_match(a, b) for a in case.names for b in report.names)
    if case.names and not report.names:
        # The analysis found no place: a typo, or a name it does not know.
        name_match = any(fuzzy_in(n, text, min_slip_chars=5) for n in case.names if len(n) >= 3)
    if report.roads:
        shared = [r for r in case.roads if any(_same_road(r, s) for s in report.roads)]
    else:
        shared = [r for r in case.roads if len(r) >= 3 and fuzzy_in(r, text)]
    road_match = bool(shared)
    crossing = any(_same_crossing(x, y) for x in case.crossings for y in report.crossings)
    near = far = False
    if road_match and case.numbers and report.numbers:
        gap = min(abs(a - b) for a in case.numbers for b in report.numbers)
        near, far = gap <= policy.number_tolerance, gap > policy.number_tolerance
    if name_match:
        return STRONG
    if case.names and report.names and not (crossing or near):
        if not any(names_close(a, b) for a in case.names for b in report.names):
            return CONFLICT  # two different named places
    if case.roads and report.roads and not road_match:
        return CONFLICT  # two different roads
    if far or (case.crossings and report.crossings and not crossing):
        return CONFLICT  # the same road, far along or at another crossing
    if crossing or near:
        return STRONG
    if road_match:
        return ROAD
    if case.streets and report.streets:
        # Only the street in common: one side is vague, or one names a road and the other
        # a place (which may well lie on that road).
        road_side = lambda p: bool(p.roads) and not p.names  # noqa: E731
        name_side = lambda p: bool(p.names) and not p.roads  # noqa: E731
        vague = not (case.specific and report.specific)
        other_halves = (road_side(case) and name_side(report)) or (
            name_side(case) and road_side(report)
        )
        return STREET if vague or other_halves else NOTHING
    if case.district and report.district:
        return DISTRICT
    return NOTHING


# ---- cases ---------------------------------------------------------------------------------
def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=CITY_TZ)  # the hotline's clock, never the machine's
    return at.astimezone(UTC).replace(microsecond=0)


def instant(at: datetime | None) -> datetime | None:
    """The report's time in UTC, whole seconds; None when there is none or it lies outside
    the calendar once its offset is applied (year 1 at +08:00)."""
    if at is None:
        return None
    try:
        return _utc(at)
    except (OverflowError, ValueError):
        return None


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    first: datetime  # UTC, whole seconds
    last: datetime
    reports: int
    codes: tuple[str, ...]
    place: PlaceSignature

    def gap_to(self, at: datetime) -> timedelta:
        if at < self.first:
            return self.first - at
        if at > self.last:
            return at - self.last
        return timedelta(0)

    def fits(self, at: datetime, merge_class: MergeClass) -> bool:
        span = max(self.last, at) - min(self.first, at)
        return self.gap_to(at) <= merge_class.window and span <= merge_class.max_span

    def closes_at(self, merge_class: MergeClass) -> datetime:
        """After this, no report can join (given on-time arrival)."""
        return min(self.last + merge_class.window, self.first + merge_class.max_span)

    def to_json(self) -> dict[str, object]:
        p = self.place
        return {
            "id": self.case_id,
            "first": _epoch(self.first),
            "last": _epoch(self.last),
            "n": self.reports,
            "codes": list(self.codes),
            "district": p.district,
            "streets": list(p.streets),
            "roads": list(p.roads),
            "names": list(p.names),
            "numbers": list(p.numbers),
            "crossings": list(p.crossings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Case:
        try:
            district = data["district"]
            case = cls(
                case_id=str(data["id"]),
                first=datetime.fromtimestamp(int(data["first"]), UTC),
                last=datetime.fromtimestamp(int(data["last"]), UTC),
                reports=int(data["n"]),
                codes=tuple(str(c) for c in data["codes"]),
                place=PlaceSignature(
                    district=str(district) if district is not None else None,
                    streets=tuple(str(s) for s in data["streets"]),
                    roads=tuple(str(r) for r in data["roads"]),
                    names=tuple(str(n) for n in data["names"]),
                    numbers=tuple(int(n) for n in data["numbers"]),
                    crossings=tuple(str(x) for x in data.get("crossings", ())),
                ),
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
            raise MergeStateError(f"case is not in the expected shape: {exc!r}") from exc
        if case.last < case.first or case.reports < 1:
            raise MergeStateError(f"case {case.case_id}: inconsistent times or count")
        return case


def _opened(report: MergeReport, at: datetime, place: PlaceSignature) -> Case:
    return Case(report.report_id, at, at, 1, (report.code,) if report.code else (), place)


def _union_place(old: PlaceSignature, place: PlaceSignature) -> PlaceSignature:
    return PlaceSignature(
        district=old.district or place.district,
        streets=_unique((*old.streets, *place.streets))[:_MAX_STREETS],
        roads=_unique((*old.roads, *place.roads))[:_MAX_ROADS],
        names=_unique((*old.names, *place.names))[:_MAX_NAMES],
        numbers=tuple(sorted({*old.numbers, *place.numbers}))[:_MAX_NUMBERS],
        crossings=_unique((*old.crossings, *place.crossings))[:_MAX_ROADS],
    )


def _absorb(case: Case, report: MergeReport, at: datetime, place: PlaceSignature) -> Case:
    codes = _unique((*case.codes, report.code)) if report.code else case.codes
    return replace(
        case,
        first=min(case.first, at),
        last=max(case.last, at),
        reports=case.reports + 1,
        codes=codes[:_MAX_CODES],
        place=_union_place(case.place, place),
    )


def _union(case: Case, other: Case) -> Case:
    return replace(
        case,
        first=min(case.first, other.first),
        last=max(case.last, other.last),
        reports=case.reports + other.reports,
        codes=_unique((*case.codes, *other.codes))[:_MAX_CODES],
        place=_union_place(case.place, other.place),
    )


@dataclass(frozen=True, slots=True)
class CaseState:
    """The open cases of one key (a Faust table value, as ``to_json``)."""

    cases: tuple[Case, ...] = ()
    watermark: datetime | None = None  # the latest report time seen for this key

    def to_json(self) -> dict[str, object]:
        return {
            "v": STATE_VERSION,
            "watermark": _epoch(self.watermark) if self.watermark else None,
            "cases": [c.to_json() for c in self.cases],
        }

    @classmethod
    def from_json(cls, data: object) -> CaseState:
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or data.get("v") != STATE_VERSION:
            raise MergeStateError(f"case state is not version {STATE_VERSION} state")
        cases = data.get("cases")
        if not isinstance(cases, list):
            raise MergeStateError("case state: cases must be a list")
        mark = data.get("watermark")
        try:
            watermark = datetime.fromtimestamp(int(mark), UTC) if mark is not None else None
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise MergeStateError(f"case state: bad watermark {mark!r}") from exc
        return cls(tuple(Case.from_json(c) for c in cases), watermark)

    def case(self, case_id: str) -> Case | None:
        return next((c for c in self.cases if c.case_id == case_id), None)


def reach(level: int, merge_class: MergeClass, policy: MergePolicy) -> timedelta:
    """How far in time evidence of this strength reaches: weaker evidence, less far (a long
    road, a whole street: another report there hours later is likely another problem)."""
    if level >= STRONG:
        return merge_class.window
    if level == ROAD:
        cap, share = policy.road_window, policy.road_share
    elif level == STREET:
        cap, share = policy.street_window, policy.street_share
    else:
        return timedelta(0)
    return min(merge_class.window, max(cap, merge_class.window * share))


@dataclass(frozen=True, slots=True)
class Similarity:
    """Whether two reports could be one case, and why."""

    same_class: bool
    place: str  # a LEVEL_NAMES value
    gap: timedelta | None
    within_window: bool
    score: float  # 0 (no) .. 1 (same place, same moment)

    @property
    def mergeable(self) -> bool:
        return self.score > 0


def similarity(report_a: MergeReport, report_b: MergeReport, policy: MergePolicy) -> Similarity:
    """Whether ``report_b`` could join a case that holds only ``report_a``: the index's
    rule for one pair (it compares a report with a whole case), for inspection and tests.
    Weaker place evidence is mergeable only when it is the one case that fits."""
    class_a, class_b = policy.class_of(report_a.code), policy.class_of(report_b.code)
    same_class = class_a is not None and class_a == class_b
    level = place_level(
        place_signature(report_a, policy),
        place_signature(report_b, policy),
        searchable_text(report_b.text, policy),
        policy,
    )
    at_a, at_b = instant(report_a.at), instant(report_b.at)
    if at_a is None or at_b is None or class_a is None:
        return Similarity(same_class, LEVEL_NAMES[level], None, False, 0.0)
    gap = abs(at_a - at_b)
    within = gap <= reach(level, class_a, policy)
    other_code = report_a.code != report_b.code and bool(report_a.code and report_b.code)
    score = 0.0
    if same_class and within and level >= STREET and not (other_code and level < STRONG):
        closeness = 1.0 - 0.5 * (gap / class_a.window)
        score = round({STREET: 0.4, ROAD: 0.7, STRONG: 1.0}[level] * closeness, 4)
    return Similarity(same_class, LEVEL_NAMES[level], gap, within, score)


@dataclass(frozen=True, slots=True)
class Step:
    case_id: str
    state: CaseState
    merged: bool  # joined an open case (False: opened one, or cannot be merged)
    closed: tuple[Case, ...]  # cases expired before this report (for hotspot counting)
    absorbed: tuple[str, ...] = ()  # case ids now part of case_id (publish as case merges)


@dataclass(frozen=True, slots=True)
class Assignment:
    case_id: str
    state: CaseState
    merged: bool
    absorbed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CaseIndex:
    """Assigns reports to cases, one key's state at a time."""

    policy: MergePolicy

    def key(self, report: MergeReport) -> str | None:
        return case_key(report, self.policy)

    def assign(self, report: MergeReport, state: CaseState) -> tuple[str, CaseState, bool]:
        """(case id, new state, merged). A report without a usable time or with a code
        the policy does not know is its own case and leaves the state as it was."""
        placed = self.assignment(report, state)
        return placed.case_id, placed.state, placed.merged

    def assignment(self, report: MergeReport, state: CaseState) -> Assignment:
        """``assign`` with the open cases the report showed to be one incident with its
        own (``absorbed``: their ids now stand for ``case_id``)."""
        merge_class = self.policy.class_of(report.code)
        at = instant(report.at)
        if at is None or merge_class is None:
            return Assignment(report.report_id, state, False, ())
        place = place_signature(report, self.policy)
        text = searchable_text(report.text, self.policy)
        watermark = max(state.watermark, at) if state.watermark else at
        cases = list(state.cases)
        levels: dict[int, int] = {}
        for i, case in enumerate(cases):
            if not case.fits(at, merge_class):
                continue
            level = place_level(case.place, place, text, self.policy)
            if level < STREET or case.gap_to(at) > reach(level, merge_class, self.policy):
                continue
            if level < STRONG and report.code and case.codes and report.code not in case.codes:
                # Another code of the class (noise, not construction noise): that is a
                # misreading only where the place is clearly the same.
                continue
            levels[i] = level
        target, absorbed = self._choose(cases, levels)
        if target is None:
            opened = _opened(report, at, place)
            cases.append(opened)
            if len(cases) > self.policy.max_cases:
                # Over the bound: the case that has been quiet longest goes.
                oldest = min(range(len(cases) - 1), key=lambda k: (cases[k].last, cases[k].case_id))
                del cases[oldest]
            return Assignment(opened.case_id, CaseState(tuple(cases), watermark), False, ())
        joined = cases[target]
        for other in absorbed:
            joined = _union(joined, cases[other])
        joined = _absorb(joined, report, at, place)
        cases[target] = joined
        gone = set(absorbed)
        kept = tuple(c for k, c in enumerate(cases) if k not in gone)
        return Assignment(
            joined.case_id,
            CaseState(kept, watermark),
            True,
            tuple(cases[k].case_id for k in absorbed),
        )

    def _choose(self, cases: list[Case], levels: dict[int, int]) -> tuple[int | None, list[int]]:
        """The case to join (None: open one) and the cases to fold into it."""

        def size(i: int) -> tuple[int, datetime, str]:
            return (-cases[i].reports, cases[i].first, cases[i].case_id)

        strong = sorted((i for i, level in levels.items() if level == STRONG), key=size)
        if strong:
            # Strong evidence for several open cases: the report shows they are one incident
            # (a 小区 named by some, its road and number by others), unless they contradict
            # each other.
            target = strong[0]
            folded = [
                i
                for i in strong[1:]
                if place_level(cases[target].place, cases[i].place, "", self.policy) != CONFLICT
            ]
            return target, folded
        if not levels:
            return None, []
        best = max(levels.values())
        tied = sorted((i for i, level in levels.items() if level == best), key=size)
        if len(tied) == 1:
            return tied[0], []
        # Weaker evidence (a road, a street) fits several cases: only a case that many more
        # people reported takes it.
        top, second = cases[tied[0]].reports, cases[tied[1]].reports
        if top >= self.policy.dominance * second:
            return tied[0], []
        return None, []

    def _closing(self, state: CaseState, now: datetime) -> tuple[list[Case], list[Case]]:
        now = _utc(now)
        keep: list[Case] = []
        gone: list[Case] = []
        for case in state.cases:
            merge_class = self._case_class(case)
            if case.closes_at(merge_class) + self.policy.grace < now:
                gone.append(case)
            else:
                keep.append(case)
        return keep, gone

    def _case_class(self, case: Case) -> MergeClass:
        for code in case.codes:
            found = self.policy.class_of(code)
            if found is not None:
                return found
        return self.policy.unclassified

    def closing(self, state: CaseState, now: datetime) -> tuple[Case, ...]:
        """The cases ``expire`` would drop at ``now``: no report can join them any more."""
        return tuple(self._closing(state, now)[1])

    def expire(self, state: CaseState, now: datetime) -> CaseState:
        """The state without the cases no report can join any more: closed (window and
        span over) for longer than the grace period before ``now``."""
        keep, gone = self._closing(state, now)
        if not gone:
            return state
        return CaseState(tuple(keep), state.watermark)

    def step(self, report: MergeReport, state: CaseState) -> Step:
        """Expire at the key's event time, then assign: what the agent does per report."""
        now = state.watermark
        at = instant(report.at)
        if at is not None:
            now = max(now, at) if now else at
        closed: tuple[Case, ...] = ()
        if now is not None:
            closed = self.closing(state, now)
            state = self.expire(state, now)
        placed = self.assignment(report, state)
        return Step(placed.case_id, placed.state, placed.merged, closed, placed.absorbed)


def follow(merged_into: Mapping[str, str], case_id: str) -> str:
    """The case an id stands for now, after case merges (``Step.absorbed``: each absorbed
    id -> the id it joined)."""
    seen: set[str] = set()
    while case_id in merged_into and case_id not in seen:
        seen.add(case_id)
        case_id = merged_into[case_id]
    return case_id


# ---- hotspots ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HotspotRule:
    """A place producing ``min_cases`` cases or more within ``days`` days (local days)."""

    min_cases: int = 3
    days: int = 7
    # Which place labels count: "name" (小区, landmark), "crossing", "number" (road and
    # house number), "road", "street". Roads and streets are long: off by default.
    levels: frozenset[str] = frozenset({"name", "crossing", "number"})

    def __post_init__(self) -> None:
        if self.min_cases < 1 or self.days < 1:
            raise ValueError("min_cases and days must be >= 1")


@dataclass(frozen=True, slots=True)
class Hotspot:
    place: str
    district: str
    cases: int
    window: tuple[date, date]  # first and last local day counted


def case_place(case: Case) -> tuple[str, str] | None:
    """(level, label) of the most specific place the case's reports gave."""
    p = case.place
    if p.names:
        return "name", p.names[0]
    if len(p.roads) >= 2:
        return "crossing", "与".join(sorted(p.roads[:2])) + "交叉口"
    if p.roads and p.numbers:
        return "number", f"{p.roads[0]}{p.numbers[0]}号"
    if p.roads:
        return "road", p.roads[0]
    if p.streets:
        return "street", p.streets[0]
    return None


def hotspot_key(case: Case, rule: HotspotRule) -> str | None:
    """The hotspot table's key for a case (``"<district>|<place>"``), or None when its place
    is not specific enough for the rule (or its district unknown)."""
    found = case_place(case)
    if found is None or case.place.district is None or found[0] not in rule.levels:
        return None
    return f"{case.place.district}|{found[1]}"


def _day(at: datetime) -> date:
    return at.astimezone(CITY_TZ).date()


def count_case(counts: Mapping[str, int], at: datetime, rule: HotspotRule) -> dict[str, int]:
    """A place's per-day case counts (ISO day -> n) with one more case at ``at``; days older
    than the rule's window are dropped (the table value stays at most ``days`` entries)."""
    day = _day(at)
    oldest = day - timedelta(days=rule.days - 1)
    out: dict[str, int] = {}
    for day_text, n in counts.items():
        seen = _parse_day(day_text)
        if seen is not None and seen >= oldest and isinstance(n, int) and n > 0:
            out[seen.isoformat()] = n
    out[day.isoformat()] = out.get(day.isoformat(), 0) + 1
    return dict(sorted(out.items()))


def _parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def hotspots(
    case_counts_by_place: Mapping[str, Mapping[str, int]],
    now: datetime,
    rule: HotspotRule | None = None,
) -> list[Hotspot]:
    """Places (``"<district>|<place>"`` -> ISO day -> cases) with at least ``min_cases``
    cases in the ``days`` local days ending today, most cases first."""
    rule = rule or HotspotRule()
    today = _day(now)
    since = today - timedelta(days=rule.days - 1)
    found: list[Hotspot] = []
    for key, by_day in case_counts_by_place.items():
        total = 0
        for day_text, n in by_day.items():
            day = _parse_day(day_text)
            if day is not None and since <= day <= today and isinstance(n, int) and n > 0:
                total += n
        if total >= rule.min_cases:
            district, _, place = key.partition("|")
            found.append(
                Hotspot(place or district, district if place else "", total, (since, today))
            )
    return sorted(found, key=lambda h: (-h.cases, h.district, h.place))
