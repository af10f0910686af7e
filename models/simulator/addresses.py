"""Addresses the way people give them, and what each one tells a reader.

A ``Gazetteer`` is built once per domain: the domain's districts, streets and roads, plus
invented but plausible 小区, markets, schools, parks, rivers and villages. The invented
pools are fixed per domain (seeded by the district's name, not by the caller's seed),
because a city's places do not change between two archive extracts.

``Gazetteer.address`` writes one address for a known place (district, street, location
type) in one of the forms people use, and reports what the text establishes
(``stated_district``/``stated_street``): whether it settles the unit is decided by the rule's
need (a street office needs the street, a district department the district).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from models.simulator.grammar import Phrases, pick
from schemas.domain import Domain

ADDRESS_FORMS: tuple[str, ...] = (
    "road_number",
    "crossing",
    "community",
    "landmark",
    "street_only",
    "district_road",
    "road_only",
    "town_village",
    "district_only",
    "none",
)

# Which districts have villages (and 城中村): the two old city districts have none.
_URBAN_CORE = ("市南区", "市北区")

# How people place each location type (form -> weight).
_FORM_WEIGHTS: dict[str, dict[str, float]] = {
    "main_road": {
        "road_number": 4,
        "crossing": 3,
        "district_road": 2,
        "road_only": 1,
        "landmark": 2,
        "street_only": 1,
        "district_only": 0.4,
        "none": 0.3,
    },
    "back_street": {
        "road_number": 3,
        "landmark": 2,
        "district_road": 1.5,
        "road_only": 0.8,
        "street_only": 2,
        "district_only": 0.4,
        "none": 0.3,
    },
    "residential": {
        "community": 6,
        "road_number": 2.5,
        "landmark": 0.8,
        "street_only": 1.5,
        "district_road": 0.6,
        "district_only": 0.3,
        "none": 0.6,
    },
    "commercial": {
        "landmark": 4,
        "road_number": 2,
        "district_road": 1,
        "street_only": 1,
        "crossing": 0.5,
        "none": 0.3,
    },
    "park_square": {"landmark": 5, "street_only": 1, "district_road": 0.8, "none": 0.3},
    "waterfront": {
        "landmark": 5,
        "street_only": 1,
        "town_village": 0.8,
        "district_only": 0.5,
        "none": 0.3,
    },
    "construction_site": {
        "road_number": 3,
        "crossing": 2,
        "landmark": 2,
        "street_only": 1,
        "district_road": 1,
        "none": 0.2,
    },
    "village": {"town_village": 7, "street_only": 1, "district_only": 0.5, "none": 0.3},
    "industrial": {
        "landmark": 4,
        "road_number": 2,
        "town_village": 1,
        "street_only": 1,
        "district_road": 1,
        "none": 0.2,
    },
}

# ---- spot phrases: they make the location type readable (one template per line) ----------
_AFTER_NUMBER = {
    "main_road": "{门前|门口|对面|东侧|西侧|南侧|北侧|附近}{的|}{路边|人行道上|马路上|主路上}",
    "back_street": "{后面|旁边|西边|东边}的{小巷|小胡同|巷子}{里|}",
    "residential": (
        "{院内|院里|院|小区内|宿舍院里}\n{院|小区|宿舍院}{3号楼下|东门里面|里面|楼下|2号楼前}"
    ),
    "commercial": "{沿街商铺|商业街|市场门口|商场门前|底商门口|集贸市场}",
    "park_square": "{对面的|旁边的}{小广场|街心公园|绿地|游园}{里|}",
    "waterfront": "{对面的|附近的}{海边|河边|河道|沙滩上}",
    "construction_site": "{在建工地|工地门口|施工工地|工地围挡旁|工地大门口}",
    "industrial": "{厂区|工业园|厂子|物流园}{门口|里面|附近}",
    "village": "{附近的|后面的}{城中村|村子}里",
}
_AFTER_CROSSING = {
    "main_road": (
        "{附近|东北角|西南角|东南角|西北角|往南50米|往北100米}{的|}{路边|人行道上}\n"
        "{附近|东侧|一带|往西一点}"
    ),
    "back_street": "{附近的|往东的|往里的}{小巷子|胡同|背街小巷}{里|}",
    "residential": "{东北角|西南角|附近}的{小区|宿舍院|居民楼}{里|院内}",
    "commercial": "{东北角|附近|西南角}的{市场|商场|商业街}{门口|里|}",
    "park_square": "{东北角|旁边}的{小广场|绿地|街心公园}{里|}",
    "waterfront": "{附近的|往南的}{河边|海边}",
    "construction_site": "{东北角|西南角|东南侧|西北侧}的{工地|在建工地}{门口|}",
    "industrial": "{附近的|往北的}{厂区|工业园}{门口|}",
    "village": "{附近的|往东的}{城中村|村子}{里|}",
}
_AFTER_ROAD = {
    "main_road": (
        "{上的|边上的|}{路边|人行道}\n{东段|西段|南段|北段|中段}{路边|人行道上|}\n{沿线|上|主路上}"
    ),
    "back_street": "{旁边|附近}的{小巷子|小胡同|背街小巷}{里|}",
    "residential": "{上的|附近的}{一个|}{小区|老小区|宿舍院|家属院}{里|院内|楼下}",
    "commercial": "{上的|}{农贸市场|商业街|沿街商铺|商场}{门口|附近|}",
    "park_square": "{边上的|旁边的}{小广场|街心公园|绿地|游园}{里|}",
    "waterfront": "{附近的|尽头的|对面的}{海边|河边|河道|沙滩}",
    "construction_site": "{上的|}{在建工地|一个工地|施工工地}{门口|旁边|}",
    "industrial": "{附近的|上的}{厂区|工业园|物流园|厂子}{门口|里|}",
    "village": "{附近的|旁边的}{城中村|村子}{里|}",
}
_STANDALONE = {
    "main_road": "{一条|}{主路|大马路|主干道}上\n路边人行道上\n{公交站|路口}附近的{马路上|路边}",
    "back_street": "{一条|}{小胡同|小巷子|背街小巷}里\n{老街|居民区}的{小巷子|胡同}里",
    "residential": "{我们|俺们|}小区{里|楼下|门口里面}\n{我家|俺家}楼下\n{宿舍院|家属院}里",
    "commercial": "{农贸市场|商业街|菜市场|商场|步行街}{门口|里|旁边}",
    "park_square": "{公园|广场|街心公园|绿地}{里|上}",
    "waterfront": "{河边|海边|沙滩上|河道里|岸边}",
    "construction_site": "{一个|}{工地|在建工地}{门口|里|旁边}",
    "village": "{我们|俺们|}村{里|口|头}",
    "industrial": "{工业园|厂区}{里|门口}",
}
_STANDALONE_FORMAL = {
    "main_road": "{辖区|}{一条|}{主干道|主路|道路}{上|旁}\n{某|一}路段{路边|人行道上}",
    "back_street": "{辖区|}{一条|}{背街小巷|小巷|胡同}{内|里}",
    "residential": (
        "{某|一}{小区|居民小区}{内|院内}\n来电人{所在|居住的}小区{内|楼下}\n来电人{家|住处}楼下"
    ),
    "commercial": "{辖区|}{一|某}{农贸市场|商业街|商场}{门口|内|周边}",
    "park_square": "{辖区|}{一|某}{公园|广场|绿地}{内|里}",
    "waterfront": "{辖区|}{河道|海边|沙滩|岸边}{一带|附近|}",
    "construction_site": "{辖区|}{一|某}{在建工地|施工工地|建筑工地}{门口|内|旁}",
    "village": "{某村|村内|一村庄}\n来电人所在村{内|村口|}",
    "industrial": "{辖区|}{一|某}{工业园|厂区|企业}{内|门口|附近}",
}
_VILLAGE_SPOT = {
    "village": "{村口|村东头|村西头|村委会旁边|村里|村南|村北的路边|}",
    "waterfront": "{东边|附近|村北|村南}的{河边|河沟|水库边|河道}",
    "industrial": "{东头|村北|村西|附近}的{厂子|工业园|加工厂|厂区}",
    "construction_site": "{村东|附近|村口}的{工地|施工工地}",
}
_COMMUNITY_SPOT = """
{1|2|3|5|6|7|8|9|11|12|15|16}号楼{下|前|后面|门口|}
{小区|}{东门|西门|南门|北门}{里|口|里面}
{院里|院内|小区里|小区内}
{2|3|5|6|9}号楼{1|2|3|4}单元{门口|楼道|}
{小区|}地下车库{里|入口}
{小区|楼下|}车棚旁边
小区{中心广场|花园|健身器材}{边上|旁边|里}
"""
_HOME_SPOT = """
{1|2|3|5|6|7|8|12|15}号楼{1|2|3|4}单元{101|202|301|402|502|603|1101|1502}户
{2|3|5|6|8}号楼
"""

_LANDMARK_KIND = {
    "commercial": ("市场", "农贸市场", "商城", "购物中心", "商业街", "步行街", "夜市", "海鲜市场"),
    "park_square": ("公园", "广场", "游园", "文化广场", "体育公园"),
    "construction_site": ("项目工地", "地块项目工地", "二期工地", "安置房项目工地", "棚改项目工地"),
    "industrial": ("工业园", "产业园", "物流园", "机械厂", "食品厂", "橡胶厂", "纺织厂", "包装厂"),
    "main_road": ("中学", "小学", "医院", "银行", "超市", "大厦", "酒店", "加油站", "幼儿园"),
    "back_street": ("中学", "医院", "超市", "大厦", "菜市场"),
    "residential": ("中学", "医院", "机械厂", "纺织厂", "电厂", "铁路"),
}
_LANDMARK_SPOT = {
    "commercial": "{门口|里|周边|前面|东门|}",
    "park_square": "{里|内|东门里面|健身区|湖边|}",
    "construction_site": "{门口|里|围挡外|}",
    "industrial": "{门口|里|附近|厂区}",
    "main_road": "{门口|对面|附近|东侧}的{马路上|路边|人行道上}",
    "back_street": "{后面|旁边|东边|西侧}的{小胡同|小巷子|背街小巷}{里|}",
    "residential": "{家属院|宿舍院|宿舍|职工宿舍}{里|}",
    "waterfront": "{边|岸边|附近|边上}",
}

# Real places people name, kept only where they cannot be mistaken for a street.
_REAL_PARKS = {
    "市南区": ("五四广场", "中山公园", "音乐广场", "小鱼山公园", "信号山公园"),
    "市北区": ("贮水山公园", "北岭山公园"),
    "李沧区": ("世博园", "老虎山公园"),
    "崂山区": ("午山公园",),
    "黄岛区": ("唐岛湾公园",),
    "城阳区": ("世纪公园",),
    "即墨区": ("即墨古城",),
    "莱西市": ("月湖公园",),
}
_REAL_WATERS = {
    "市南区": ("第一海水浴场", "第六海水浴场", "栈桥", "太平湾"),
    "市北区": ("海泊河", "小港湾"),
    "李沧区": ("张村河",),
    "崂山区": ("石老人海水浴场", "张村河", "流清河"),
    "黄岛区": ("金沙滩", "银沙滩", "风河", "唐岛湾"),
    "城阳区": ("墨水河",),
    "即墨区": ("墨水河", "鳌山湾"),
    "胶州市": ("少海", "云溪河"),
    "平度市": ("现河", "泽河", "大沽河"),
    "莱西市": ("产芝水库", "小沽河", "大沽河"),
}

_STEM_A = "海金银青福瑞华新兴和安盛嘉宝龙凤丽阳春明德仁康泰永昌益利鑫佳宏恒汇万天远"
_STEM_B = "韵泉山苑林岭湾港景源悦晟润城隆达丰茂通顺宁星光旺晖"
_COMMUNITY_A = (
    "海韵",
    "金海",
    "万科",
    "绿城",
    "鲁信",
    "中海",
    "保利",
    "华润",
    "颐和",
    "福林",
    "嘉和",
    "锦绣",
    "翠湖",
    "银海",
    "山水",
    "东方",
    "阳光",
    "幸福",
    "和平",
    "新都",
    "盛世",
    "海湾",
    "春和",
    "清泉",
    "碧海",
    "紫荆",
    "丽景",
    "枫林",
    "书香",
    "海怡",
    "天泰",
    "鲁商",
    "融创",
    "瑞源",
    "湖光",
    "国信",
    "青特",
    "海逸",
    "温馨",
    "馨苑",
    "富华",
    "明珠",
    "金岭",
    "鑫江",
)
_COMMUNITY_B = (
    "花园",
    "小区",
    "家园",
    "新村",
    "名苑",
    "华庭",
    "公寓",
    "雅居",
    "苑",
    "府",
    "城",
    "国际",
    "嘉园",
    "山庄",
    "里",
    "新城",
    "御景",
    "尚城",
    "福邸",
    "花苑",
    "星城",
    "水岸",
)
_SURNAMES_V = "王张李刘赵孙杨周吴徐胡朱高林何郭马罗梁宋郑韩唐冯于董程曹袁邓许苏姜崔"
_VILLAGE_PATTERNS = (
    "{s}家庄",
    "{s}家疃",
    "{s}家埠",
    "{s}家屯",
    "{s}家洼",
    "{d}{s}家村",
    "{s}戈庄",
    "{d}{s}戈庄",
    "{d}{s}庄",
    "{d}疃",
    "{d}埠村",
    "{s}家沟",
    "{s}家岭",
    "{d}{s}家",
)
_VILLAGE_DIRECTION = ("东", "西", "南", "北", "前", "后", "大", "小", "上", "下")

_MARKING_WORDS = (
    "上水",
    "自来水",
    "污水",
    "雨水",
    "电力",
    "燃气",
    "热力",
    "通信",
    "电信",
    "联通",
    "移动",
)
# Short street names that are also everyday words ("路上马路…" would name 上马街道).
_COMMON_WORDS = ("上马", "温泉", "河套", "胶东")
_DISTRICT_SHORT = ("市南", "市北", "李沧", "崂山", "黄岛", "城阳", "即墨", "胶州", "平度", "莱西")


@dataclass(frozen=True, slots=True)
class Address:
    form: str
    text: str  # as written in the report, with the spot that shows the location type
    road: str | None
    place: str | None  # the named 小区/landmark/village, or "A与B交叉口" for a crossing
    stated_district: str | None  # what the text settles (None: a reader cannot tell)
    stated_street: str | None


def _number(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.3:
        return rng.randint(1, 9)
    if r < 0.85:
        return rng.randint(10, 99)
    return rng.randint(100, 399)


class Gazetteer:
    """The domain's places plus invented local names; writes addresses."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.districts: tuple[str, ...] = domain.districts
        self.streets_of: dict[str, tuple[str, ...]] = {
            d: tuple(s for s, sd in domain.street_district.items() if sd == d)
            for d in domain.districts
        }
        self.roads_of: dict[str, tuple[str, ...]] = {
            d: tuple(r for r, ds in domain.road_districts.items() if d in ds)
            for d in domain.districts
        }
        self.aliases_of: dict[str, tuple[str, ...]] = {
            d: tuple(n for n, cd in domain.district_names.items() if cd == d and n != d)
            for d in domain.districts
        }
        self.shared_roads_of: dict[str, tuple[str, ...]] = {
            d: tuple(r for r in self.roads_of[d] if len(domain.road_districts[r]) > 1)
            for d in domain.districts
        }
        self._forbidden = self._forbidden_substrings()
        self.short_street: dict[str, str | None] = {
            s: self._short_form(s) for s in domain.street_district
        }
        self.has_villages: dict[str, bool] = {d: d not in _URBAN_CORE for d in domain.districts}
        self.stems: dict[str, tuple[str, ...]] = {}
        self.communities: dict[str, tuple[str, ...]] = {}
        self.villages: dict[str, tuple[str, ...]] = {}
        used: set[str] = set()
        for district in domain.districts:
            # A fixed pool per district: same names in every archive drawn from this domain.
            prng = random.Random(f"citystream-gazetteer:{district}")
            self.stems[district] = self._unique(
                prng, used, 28, lambda r: pick(r, tuple(_STEM_A)) + pick(r, tuple(_STEM_B))
            )
            for street in self.streets_of[district]:
                self.communities[street] = self._unique(
                    prng, used, 7, lambda r: pick(r, _COMMUNITY_A) + pick(r, _COMMUNITY_B)
                )
                if self.has_villages[district]:
                    self.villages[street] = self._unique(prng, used, 7, self._village_name)
        self.waters: dict[str, tuple[str, ...]] = {
            d: tuple(w for w in _REAL_WATERS.get(d, ()) if self._clean(w)) for d in domain.districts
        }
        self.parks: dict[str, tuple[str, ...]] = {
            d: tuple(p for p in _REAL_PARKS.get(d, ()) if self._clean(p)) for d in domain.districts
        }
        self._phrases: dict[str, Phrases] = {}

    # ---- pools -------------------------------------------------------------------------
    def _forbidden_substrings(self) -> tuple[str, ...]:
        words: list[str] = list(_MARKING_WORDS) + list(_DISTRICT_SHORT)
        words += list(self.domain.district_names)
        words += list(self.domain.road_districts)
        for street in self.domain.street_district:
            words.append(street)
            bare = street.removesuffix("街道").removesuffix("镇")
            words.append(bare)
            if bare.endswith("路"):
                words.append(bare[:-1])
        return tuple(sorted({w for w in words if len(w) >= 2}))

    def _clean(self, name: str) -> bool:
        return not any(w in name for w in self._forbidden)

    def _unique(
        self, prng: random.Random, used: set[str], n: int, make: Callable[[random.Random], str]
    ) -> tuple[str, ...]:
        out: list[str] = []
        for _ in range(n * 40):
            name = make(prng)
            if name not in used and self._clean(name):
                used.add(name)
                out.append(name)
                if len(out) == n:
                    break
        return tuple(out)

    @staticmethod
    def _village_name(prng: random.Random) -> str:
        pattern = pick(prng, _VILLAGE_PATTERNS)
        name = pattern.format(s=pick(prng, tuple(_SURNAMES_V)), d=pick(prng, _VILLAGE_DIRECTION))
        return name if name.endswith("村") else name + "村"

    def _short_form(self, street: str) -> str | None:
        """The street's everyday short name, when it cannot be read as anything else."""
        bare = street.removesuffix("街道").removesuffix("镇")
        if len(bare) < 2 or bare == street or bare.endswith("路") or bare in _COMMON_WORDS:
            return None
        others = [s for s in self.domain.street_district if s != street]
        others += list(self.domain.road_districts) + list(self.domain.district_names)
        others += list(_DISTRICT_SHORT)
        if any(bare in o for o in others):
            return None
        return bare

    def street_mentions(self, street: str) -> tuple[str, ...]:
        short = self.short_street.get(street)
        return (street, short) if short else (street,)

    def district_mentions(self, district: str) -> tuple[str, ...]:
        return (district, *self.aliases_of[district])

    def _ph(self, template: str) -> Phrases:
        found = self._phrases.get(template)
        if found is None:
            found = self._phrases[template] = Phrases(template)
        return found

    def _spot(self, rng: random.Random, table: dict[str, str], loc: str) -> str:
        return self._ph(table[loc]).pick(rng)

    # ---- writing an address --------------------------------------------------------------
    def forms_for(self, loc: str, district: str) -> dict[str, float]:
        weights = dict(_FORM_WEIGHTS[loc])
        if not self.has_villages[district]:
            weights.pop("town_village", None)
        return weights

    def address(
        self,
        rng: random.Random,
        *,
        district: str,
        street: str,
        loc: str,
        need: str,
        sufficient: bool,
        formal: bool,
        home: bool = False,
    ) -> Address:
        """One address for (district, street, loc).

        ``need`` is what the unit needs ("street", "district" or "none"); with ``sufficient``
        False the address leaves exactly that out (no street for a street office; no district,
        street or single-district road for a district department)."""
        weights = self.forms_for(loc, district)
        if not sufficient and need == "street":
            for form in ("street_only", "community", "town_village"):
                weights.pop(form, None)
        elif not sufficient and need == "district":
            shared = self.shared_roads_of[district]
            weights = {
                f: w
                for f, w in weights.items()
                if f == "none" or (shared and f in ("road_only", "road_number", "landmark"))
            }
            if "none" not in weights:
                weights["none"] = 0.5
        form = _weighted_pick(rng, weights)
        ambiguous_road = not sufficient and need == "district"
        return self._write(
            rng, form, district, street, loc, need, sufficient, formal, home, ambiguous_road
        )

    def _pick_road(self, rng: random.Random, district: str, ambiguous: bool) -> str:
        pool = self.shared_roads_of[district] if ambiguous else self.roads_of[district]
        return pick(rng, pool)

    def _write(
        self,
        rng: random.Random,
        form: str,
        district: str,
        street: str,
        loc: str,
        need: str,
        sufficient: bool,
        formal: bool,
        home: bool,
        ambiguous_road: bool,
    ) -> Address:
        road: str | None = None
        place: str | None = None
        gives_district = False
        body: str
        if form == "road_number":
            road = self._pick_road(rng, district, ambiguous_road)
            number = f"{_number(rng)}号"
            if loc == "residential" and home and rng.random() < 0.85:
                body = (
                    f"{road}{number}{pick(rng, ('', '院', '小区'))}{self._ph(_HOME_SPOT).pick(rng)}"
                )
            else:
                body = f"{road}{number}{self._spot(rng, _AFTER_NUMBER, loc)}"
            gives_district = len(self.domain.road_districts[road]) == 1
        elif form == "crossing":
            roads = self.roads_of[district]
            road = pick(rng, roads)
            other = pick(rng, tuple(r for r in roads if r != road))
            place = f"{road}与{other}交叉口"
            if formal:
                joint = pick(
                    rng, ("与{b}交叉口", "与{b}交汇处", "与{b}路口", "、{b}路口", "与{b}十字路口")
                )
            else:
                joint = pick(
                    rng,
                    (
                        "和{b}路口",
                        "跟{b}交叉口",
                        "{b}路口",
                        "和{b}十字路口",
                        "跟{b}交界的地方",
                        "与{b}交叉口",
                    ),
                )
            body = f"{road}{joint.format(b=other)}{self._spot(rng, _AFTER_CROSSING, loc)}"
            common = set(self.domain.road_districts[road]) & set(self.domain.road_districts[other])
            gives_district = len(common) == 1
        elif form == "community":
            place = pick(rng, self.communities[street])
            tail = pick(rng, ("", "小区", "", "小区", "")) if not place.endswith("小区") else ""
            home_spot = home and rng.random() < 0.85
            spot = self._ph(_HOME_SPOT if home_spot else _COMMUNITY_SPOT).pick(rng)
            if rng.random() < 0.25:
                road = pick(rng, self.roads_of[district])
                body = f"{road}{_number(rng)}号{place}{tail}{spot}"
            else:
                body = f"{place}{tail}{spot}"
        elif form == "landmark":
            body, place, road = self._landmark(rng, district, loc, ambiguous_road)
            if road is not None:
                gives_district = len(self.domain.road_districts[road]) == 1
        elif form == "town_village":
            place = pick(rng, self.villages[street])
            spot_table = _VILLAGE_SPOT if loc in _VILLAGE_SPOT else None
            spot = self._ph(spot_table[loc]).pick(rng) if spot_table else ""
            body = f"{place}{spot}"
        elif form in ("district_road", "road_only"):
            road = self._pick_road(rng, district, ambiguous_road)
            body = f"{road}{self._spot(rng, _AFTER_ROAD, loc)}"
            gives_district = form == "district_road" or len(self.domain.road_districts[road]) == 1
        elif form == "street_only":
            body = self._standalone(rng, loc, formal)
        elif form == "district_only":
            body = self._standalone(rng, loc, formal)
            gives_district = True
        else:  # none
            body = self._standalone(rng, loc, formal)

        # What must be added, what may be added, what must stay out.
        add_street = form in ("community", "street_only", "town_village")
        add_district = form in ("district_road", "district_only")
        if sufficient:
            if need == "street" and not add_street:
                add_street = True
            if need == "district" and not (gives_district or add_street or add_district):
                if form in ("road_only", "none"):
                    add_street = True  # a road alone (or nothing) plus the street
                elif rng.random() < 0.6:
                    add_district = True
                else:
                    add_street = True
            if (
                form not in ("none", "road_only")
                and not add_district
                and rng.random() < (0.5 if formal else 0.2)
            ):
                add_district = form not in ("street_only",) or rng.random() < 0.5
            if form in ("road_number", "crossing", "landmark") and not add_street:
                add_street = rng.random() < (0.3 if formal else 0.1)
        elif need == "street" and form not in ("none", "road_only"):
            add_district = add_district or rng.random() < (0.5 if formal else 0.2)
        if form == "road_only" and (add_street or add_district):
            form = "district_road"
            add_district = True
        if form in ("none", "district_only") and add_street:
            form = "street_only"
        text = self._decorate(rng, form, body, district, street, add_district, add_street, formal)
        stated_street = street if add_street else None
        district_known = add_district or add_street or gives_district
        return Address(
            form=form,
            text=text,
            road=road,
            place=place,
            stated_district=district if district_known else None,
            stated_street=stated_street,
        )

    def _standalone(self, rng: random.Random, loc: str, formal: bool) -> str:
        return self._ph((_STANDALONE_FORMAL if formal else _STANDALONE)[loc]).pick(rng)

    def _landmark(
        self, rng: random.Random, district: str, loc: str, ambiguous_road: bool
    ) -> tuple[str, str, str | None]:
        stems = self.stems[district]
        if loc == "waterfront":
            waters = self.waters[district]
            if waters and rng.random() < 0.75:
                name = pick(rng, waters)
            else:
                name = pick(rng, stems) + pick(rng, ("水库", "河", "湾"))
            spot = self._ph(_LANDMARK_SPOT["waterfront"]).pick(rng)
            if name.endswith(("浴场", "滩")):
                spot = pick(rng, ("", "沙滩上", "附近", "边上"))
            return f"{name}{spot}", name, None
        if loc == "park_square" and self.parks[district] and rng.random() < 0.35:
            name = pick(rng, self.parks[district])
        else:
            name = pick(rng, stems) + pick(rng, _LANDMARK_KIND[loc])
        spot = self._ph(_LANDMARK_SPOT[loc]).pick(rng)
        road: str | None = None
        if ambiguous_road or rng.random() < 0.6:
            road = self._pick_road(rng, district, ambiguous_road)
            glue = pick(rng, ("{r}上的{n}", "{r}{n}", "{r}边上的{n}", "{n}（{r}）", "{r}附近的{n}"))
            return f"{glue.format(r=road, n=name)}{spot}", name, road
        return f"{name}{spot}", name, None

    def _decorate(
        self,
        rng: random.Random,
        form: str,
        body: str,
        district: str,
        street: str,
        add_district: bool,
        add_street: bool,
        formal: bool,
    ) -> str:
        aliases = self.aliases_of[district]
        d_name = district
        if aliases and rng.random() < (0.25 if formal else 0.5):
            d_name = pick(rng, aliases)
        short = self.short_street[street]
        s_name = street
        if not formal and short and rng.random() < 0.6:
            s_name = short
        if formal:
            prefix = "青岛市" if add_district and rng.random() < 0.15 else ""
            prefix += d_name if add_district else ""
            if add_street:
                if form != "street_only" and rng.random() < 0.2:
                    tail = pick(rng, ("（{s}）", "，属{s}辖区，", "（{s}辖区）"))
                    return f"{prefix}{body}{tail.format(s=street)}"
                glue = "辖区" if form == "street_only" and rng.random() < 0.4 else ""
                return f"{prefix}{street}{glue}{body}"
            return f"{prefix}{body}"
        # Casual: names first (with a filler), or the street in brackets after the place.
        head = d_name if add_district else ""
        if add_street:
            bracket = form in ("community", "road_number", "landmark", "crossing")
            if bracket and rng.random() < 0.25:
                return f"{head}{body}（{s_name}）"
            if form == "street_only":
                filler = pick(rng, ("", "这边", "那块儿", "这块儿", "附近", ""))
            else:
                filler = pick(rng, ("", "", "这边的"))
            return f"{head}{s_name}{filler}{body}"
        if head:
            head += pick(rng, ("", "", "这边", "的"))
        return f"{head}{body}"


def _weighted_pick(rng: random.Random, weights: dict[str, float]) -> str:
    total = sum(weights.values())
    r = rng.random() * total
    for key, w in weights.items():
        r -= w
        if r < 0:
            return key
    return next(reversed(weights))
