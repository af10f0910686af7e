"""The content screen (processors.content_screen): known answers, variant spellings, context
rules, ordinary reports left alone, hostile input."""

from __future__ import annotations

from datetime import date

import pytest

from processors import content_screen
from processors.content_screen import CATEGORIES, ScreenResult, flagged, screen
from schemas.domain import Domain
from tests.unit.test_pii import assert_linear_patterns


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("你们这帮傻逼，什么都不管", "abuse"),
        ("一群废物，拿着工资不干活", "abuse"),
        ("操你妈的城管", "abuse"),
        ("狗官！", "abuse"),
        ("你们就是垃圾政府", "abuse"),
        ("再不来我就弄死你们", "threat"),
        ("大不了同归于尽", "threat"),
        ("信不信我炸了你们", "threat"),
        ("我真的不想活了", "self_harm"),
        ("再不解决我就从楼上跳楼", "self_harm"),
        ("我去喝农药死给你们看", "self_harm"),
        ("这帮乡巴佬素质太差", "discrimination"),
        ("河南人都是骗子", "discrimination"),
        ("明天业主们集体上访", "sensitive"),
        ("我们要去政府门口静坐示威", "sensitive"),
        ("给你们包个红包，通融一下", "bribery"),
        ("好处费好商量", "bribery"),
    ],
)
def test_categories(text: str, category: str) -> None:
    result = screen(text)
    assert category in result.flags, result
    assert flagged(result), result
    assert any(e.startswith(f"{category}:") for e in result.evidence)


@pytest.mark.parametrize(
    "text",
    [
        "傻 逼",  # inserted spaces
        "傻*逼",  # inserted symbols
        "傻\u200b逼",  # zero-width
        "傻.逼.",
        "你是SB吧",
        "s b",
        "S.B.",
        "nmsl",
        "n m s l",
        "N.M.S.L",
        "cao ni ma",
        "sha bi",
        "你們這幫傻逼",  # traditional
        "殺了你們",  # traditional threat
        "煞笔",  # homophone
        "傻b",
        "🖕🖕",
    ],
)
def test_variant_spellings(text: str) -> None:
    assert flagged(screen(text)), screen(text)


@pytest.mark.parametrize(
    "text",
    [
        "usb接口坏了",
        "2B栋楼下垃圾堆满了",
        "商场跳楼价清仓，喇叭吵死了",
        "我妈妈的腿摔了",
        "路边的树过去死了好几棵",
        "垃圾堆满了没人管，臭死了",
        "有人把杂草堆在路边一把火烧了",
        "路边狗屎到处都是",
        "小区里乱挂横幅",
        "还让不让人活了？气死了！",
        "建筑废物回收点占道",
        "水管炸了，水漫了一地",
        "红包雨活动的音响太吵",
    ],
)
def test_ordinary_complaints_are_not_flagged(text: str) -> None:
    result = screen(text)
    assert not result.flags, result
    assert not flagged(result), result


def test_quoted_and_reported_speech_counts_less() -> None:
    own = screen("你们就是傻逼")
    reported = screen("物业经理骂我傻逼，还动手推人")
    quoted = screen("业主群里有人发了一句“你们都是傻逼”")
    assert flagged(own)
    assert not reported.flags and reported.score < own.score
    assert "abuse:傻逼 (reported)" in reported.evidence
    assert not quoted.flags and "abuse:傻逼 (quoted)" in quoted.evidence
    assert "abuse:滚蛋 (reported)" in screen("他冲我喊滚蛋").evidence
    # A reported threat stays a threat (someone may be in danger).
    assert "threat" in screen("他扬言要弄死我").flags


def test_negation_counts_less() -> None:
    assert flagged(screen("给你们送红包"))
    negated = screen("我们从来没有送红包")
    assert not negated.flags
    assert any("(negated)" in e for e in negated.evidence)
    assert not screen("我不会跳楼的，就是想解决问题").flags


def test_score_combines_evidence() -> None:
    one = screen("你们是废物")
    two = screen("你们是废物，傻逼，一群垃圾")
    assert 0 < one.score < two.score <= 1
    assert (
        two.score == screen("你们是废物，傻逼，一群垃圾，傻逼，傻逼").score
    )  # repeats add nothing
    assert set(screen("傻逼，我要弄死你们，送红包").flags) == {"abuse", "threat", "bribery"}
    assert all(f in CATEGORIES for f in two.flags)


def test_threshold() -> None:
    mild = screen("卧槽，这路况")
    assert 0 < mild.score < 0.5
    assert not flagged(mild)
    assert flagged(mild, threshold=0.2)
    assert flagged(ScreenResult(0.0, (), ()), threshold=0.0)


def test_hostile_input() -> None:
    assert screen("") == ScreenResult(0.0, (), ())
    assert screen("😡😡🤬🙏💢").flags == ()
    for text in ("'; DROP TABLE x; --", "<script>alert(1)</script>", "\x00\x01\x02", "\u200b" * 50):
        assert screen(text) == ScreenResult(0.0, (), ()), text
    assert "abuse" in screen("<script>alert('sb')</script>").flags
    big = ("香港中路垃圾堆满了，" * 10_000)[:100_000]
    assert screen(big).score == 0.0
    assert screen(big + "傻逼").flags == ("abuse",)
    assert screen("傻逼" * 50_000).flags == ("abuse",)
    assert screen("s " * 50_000).score >= 0.0  # a 100 kB run of letters, linear time
    assert screen("“傻逼" * 30_000).flags == ()


def test_simulated_reports_are_not_flagged(domain: Domain) -> None:
    """Ordinary complaints (angry ones included) almost never trip the screen: 0 of 20,000
    simulated reports when this was written."""
    from models.simulator import generate_history

    history = generate_history(domain, 2000, seed=5, start=date(2024, 1, 1), end=date(2024, 12, 31))
    flagged_texts = [r.text for r in history if flagged(screen(r.text))]
    assert len(flagged_texts) <= 4, flagged_texts


def test_patterns_are_linear() -> None:
    assert_linear_patterns(content_screen)
