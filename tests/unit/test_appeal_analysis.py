"""Appeal analysis (processors.appeal_analysis): urgency, repeat complaints, sentiment, flags."""

from __future__ import annotations

from datetime import date

import pytest

from processors import appeal_analysis
from processors.appeal_analysis import AppealAnalysis, analyse, repeat_signals, sentiment
from schemas.domain import Domain, EventType
from tests.unit.test_pii import assert_linear_patterns


def _urgency(domain: Domain, text: str, code: str | None = None) -> str:
    return analyse(text, "hotline_12345", code, domain).urgency


# --- urgency ------------------------------------------------------------------------------------
def test_code_urgency_is_the_floor(domain: Domain) -> None:
    calm = "来电人反映路灯不亮，请处理。"
    assert _urgency(domain, calm) == "normal"
    assert _urgency(domain, calm, "E02") == "normal"
    assert _urgency(domain, calm, "E01") == "urgent"
    assert _urgency(domain, calm, "E07") == "critical"
    result = analyse(calm, None, "K02", domain)
    assert result.urgency_reasons == ("code K02: critical",)
    assert _urgency(domain, calm, "Z99") == "normal"  # an unknown code adds nothing


@pytest.mark.parametrize(
    "text",
    [
        "楼道里闻到很浓的煤气味，快来人",
        "我家楼下燃气泄漏了",
        "對面樓著火了，冒黑煙",  # traditional
        "路边电线掉落在地上，有人差点触电",
        "路面突然塌陷，出现一个大坑",
        "这个路口井盖丢失了，黑洞洞的",
        "河边有人落水了！",
        "电梯停了，有人被困在里面",
        "路口发生车祸，伤者躺在地上",
    ],
)
def test_danger_now_is_critical(domain: Domain, text: str) -> None:
    result = analyse(text, None, "A01", domain)
    assert result.urgency == "critical", result
    assert any(r.startswith("danger:") for r in result.urgency_reasons)


@pytest.mark.parametrize(
    "text",
    [
        "没有闻到煤气味，只是暖气不热",
        "现场未发现明火，烟是烧烤摊的",
        "烧烤摊冒烟，呛得慌",
        "无人受伤，车已挪走",
    ],
)
def test_negated_or_harmless_danger_words(domain: Domain, text: str) -> None:
    assert _urgency(domain, text, "D05") == "normal", analyse(text, None, "D05", domain)


@pytest.mark.parametrize(
    "text",
    [
        "杂物堆在楼道里，存在火灾隐患",
        "消防通道被车堵死了，一旦着火救护车开不进来",
        "马路裂了好几道缝，感觉有塌陷的迹象",
        "真着火了谁负责？",
    ],
)
def test_risk_is_urgent_not_critical(domain: Domain, text: str) -> None:
    assert _urgency(domain, text, "A07") == "urgent", analyse(text, None, "A07", domain)


def test_vulnerable_people_harmed_raise_to_urgent(domain: Domain) -> None:
    assert _urgency(domain, "人行道砖松了，我家老人前几天在这崴了脚", "E03") == "urgent"
    assert _urgency(domain, "暖气不热，家里小孩冻感冒了", "E08") == "urgent"
    assert _urgency(domain, "独居老人家里停水两天，没水喝", "E06") == "urgent"
    # A mention is not harm: background sentences stay at the code's level.
    assert (
        _urgency(domain, "这条路是周边居民出行和孩子上学的必经之路。路灯不亮。", "E02") == "normal"
    )
    assert _urgency(domain, "小区住的多是老年人。垃圾桶满了。", "A12") == "normal"
    # 石老人 is a beach, not an old person.
    assert _urgency(domain, "石老人海水浴场垃圾很多，很危险", "A01") == "normal"


def test_outage_in_the_cold_and_fire_lane(domain: Domain) -> None:
    assert _urgency(domain, "停暖三天了，外面零下五度", "E08") == "urgent"
    assert _urgency(domain, "暖气不热，室温只有12度", "E08") == "urgent"
    assert _urgency(domain, "暖气不热，室温20度", "E08") == "normal"
    assert _urgency(domain, "停电了，大冷天的家里没法待", "E09") == "urgent"
    assert _urgency(domain, "小区消防通道被私家车占满了", "D03") == "urgent"
    assert _urgency(domain, "消防通道的标线掉色了", "D03") == "normal"


def test_repeat_complaint_raises_one_level(domain: Domain) -> None:
    text = "路灯坏了，上次反映了没人管。"
    assert _urgency(domain, text, "E02") == "urgent"
    assert _urgency(domain, text, "E01") == "critical"
    result = analyse("燃气泄漏！之前已经反映过", None, "E07", domain)
    assert result.urgency == "critical" and result.repeat_complaint  # no level above the top


def test_levels_come_from_the_domain(domain: Domain) -> None:
    """A deployment with other level names: rules use the order of respond_minutes."""
    custom = Domain(
        version=1,
        districts=domain.districts,
        district_names=domain.district_names,
        street_district=domain.street_district,
        road_districts=domain.road_districts,
        location_types=domain.location_types,
        event_types={"X1": EventType("X1", "c", "n", "low", "D:x")},
        urgency_minutes={"low": 2880, "mid": 240, "high": 60, "top": 15},
    )
    assert analyse("垃圾满了", None, "X1", custom).urgency == "low"
    assert analyse("消防通道被堵了", None, "X1", custom).urgency == "mid"
    assert analyse("闻到煤气味", None, "X1", custom).urgency == "top"
    assert analyse("消防通道被堵了，多次反映无果", None, None, custom).urgency == "high"


# --- repeat complaints --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "我又打电话了，还是没人来",
        "再次反映这个问题",
        "这是我第三次反映了",
        "已经第3次打12345了",
        "多次反映，没人处理",
        "上次反映了没人管",
        "一直没人处理",
        "问题至今未解决",
        "报修过好几次也没人来",
        "12345打了好几回了，管用吗？",
        "来电人称已多次反映未果",
        "上周反映过，现在还没解决",  # 还没解决 with a past report
        "之前打過好幾次熱線電話",  # traditional
        "说会处理，结果到现在也没动静",
        "不是第一次投诉了",
    ],
)
def test_repeat_complaints(text: str) -> None:
    assert repeat_signals(text), text


@pytest.mark.parametrize(
    "text",
    [
        "垃圾又堆满了",  # recurring problem, no earlier report
        "楼上又开始吵了",
        "这个月第三次停水了",
        "他们又打起来了",
        "如果还不解决，我就再次反映",  # conditional
        "再不处理我会再次投诉",  # future
        "这是第一次反映",
        "之前从来没有反映过",
        "垃圾堆了三天还没解决",  # 还没解决 with no report mentioned
        "楼上说了多少次都不听",  # told the neighbour, not the authorities
        "停电了，刚才又来电了",
        "",
    ],
)
def test_not_repeat_complaints(text: str) -> None:
    assert repeat_signals(text) == (), text


def test_repeat_evidence_is_reported(domain: Domain) -> None:
    result = analyse("路灯不亮，之前已经反映过，至今未解决", None, None, domain)
    assert result.repeat_complaint
    assert result.repeat_evidence == ("之前已经反映过", "至今未解决")
    assert "repeat complaint: one level up" in result.urgency_reasons


# --- sentiment and flags --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("感谢工作人员及时处理，表扬！", "positive"),
        ("非常满意，辛苦了", "positive"),
        ("太气愤了，相关部门不作为！！", "negative"),
        ("对处理结果不满意", "negative"),
        ("处理得不及时，很失望", "negative"),
        ("来电人反映路灯不亮，请相关部门处理。", "neutral"),
        ("麻烦尽快清理，谢谢", "neutral"),  # a polite close is no praise
        ("气死了，到底有没有人管？🤬", "negative"),
        ("你们这帮傻逼", "negative"),
    ],
)
def test_sentiment(text: str, label: str) -> None:
    got, score = sentiment(text, abusive="傻逼" in text)
    assert got == label, (text, score)
    assert -1.0 <= score <= 1.0


def test_analysis_fields_and_flags(domain: Domain) -> None:
    result = analyse("你们这帮废物，再不处理我就弄死你们，已经第三次反映了", "app", "A01", domain)
    assert isinstance(result, AppealAnalysis)
    assert set(result.flags) == {"abuse", "threat"}
    assert result.sentiment == "negative" and result.sentiment_score < -0.5
    assert result.repeat_complaint and result.urgency == "urgent"
    assert analyse("路灯不亮", None, None, domain).flags == ()


# --- hostile input --------------------------------------------------------------------------
def test_hostile_input(domain: Domain) -> None:
    for text in ("", "😡😡🤬", "'; DROP TABLE x; --", "<script>alert(1)</script>", "\u200b" * 20):
        result = analyse(text, None, None, domain)
        assert result.urgency == "normal" and not result.repeat_complaint, text
        assert result.sentiment == "neutral" or text.startswith("😡")
    big = ("路灯不亮，" * 20_000)[:100_000]
    assert analyse(big, None, None, domain).urgency == "normal"
    assert analyse(big + "闻到煤气味", None, None, domain).urgency == "critical"
    assert analyse("着火" * 50_000, None, None, domain).urgency == "critical"
    assert analyse("没有着火" * 25_000, None, None, domain).urgency == "normal"
    assert analyse("1\u200b" * 50_000, None, None, domain).urgency == "normal"
    mixed = "暖氣不熱，屋裡才１２度，家裡老人凍感冒了，報修過好幾次"
    result = analyse(mixed, None, "E08", domain)
    assert result.urgency == "critical" and result.repeat_complaint  # urgent + repeat


def test_simulated_reports(domain: Domain) -> None:
    """On simulated reports with their codes, text signals and repeats only ever raise the
    taxonomy's urgency, and the analysis never fails."""
    from models.simulator import generate_history

    levels = ("normal", "urgent", "critical")
    history = generate_history(domain, 500, seed=9, start=date(2024, 1, 1), end=date(2024, 12, 31))
    repeats = 0
    for record in history:
        result = analyse(record.text, record.channel, record.code, domain)
        floor = domain.event_types[record.code].urgency
        assert levels.index(result.urgency) >= levels.index(floor)
        repeats += result.repeat_complaint
    assert 0.03 < repeats / len(history) < 0.3


def test_patterns_are_linear() -> None:
    assert_linear_patterns(appeal_analysis)
