"""Personal-data masking (processors.pii) and its evaluation set (processors.pii_testset)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from processors import appeal_analysis, content_screen, pii
from processors.pii import (
    FULL_NAME_PLACEHOLDER,
    PLACEHOLDERS,
    SURNAME_PLACEHOLDER,
    PiiSpan,
    find_pii,
    fold,
    id_checksum_ok,
    luhn_ok,
    mask,
)
from processors.pii_testset import masking_report, pii_cases
from schemas.domain import Domain

_REPEATS = None


def _parsed(pattern: re.Pattern[str]) -> list[tuple[object, object]]:
    from re import _parser  # type: ignore[attr-defined]

    return list(_parser.parse(pattern.pattern, pattern.flags))


def _unbounded(items: list[tuple[object, object]]) -> bool:
    from re import _constants  # type: ignore[attr-defined]

    repeats = {_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT}
    for op, av in items:
        if op in repeats:
            _, high, sub = av  # type: ignore[misc]
            if high == _constants.MAXREPEAT or _unbounded(list(sub)):
                return True
        elif op == _constants.SUBPATTERN:
            if _unbounded(list(av[-1])):  # type: ignore[index]
                return True
        elif op == _constants.BRANCH:
            if any(_unbounded(list(b)) for b in av[1]):  # type: ignore[index]
                return True
        elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
            if _unbounded(list(av[1])):  # type: ignore[index]
                return True
    return False


def _single_run(items: list[tuple[object, object]]) -> bool:
    """The whole pattern is one character class repeated ("[^。！？]+"): every start matches
    and consumes, so finditer is linear."""
    from re import _constants  # type: ignore[attr-defined]

    if len(items) != 1 or items[0][0] != _constants.MAX_REPEAT:
        return False
    sub = list(items[0][1][2])  # type: ignore[index]
    return len(sub) == 1 and sub[0][0] in (
        _constants.IN,
        _constants.LITERAL,
        _constants.NOT_LITERAL,
    )


def assert_linear_patterns(module: types.ModuleType) -> None:
    """Every module-level regex repeats only boundedly ({0,63}), or is a single character-class
    run: no catastrophic backtracking and no quadratic rescans of a long text."""
    patterns = {n: v for n, v in vars(module).items() if isinstance(v, re.Pattern)}
    assert patterns, module.__name__
    for name, pattern in patterns.items():
        items = _parsed(pattern)
        assert not _unbounded(items) or _single_run(items), f"{module.__name__}.{name}"


# --- known answers -------------------------------------------------------------------------------
def _masked(text: str) -> str:
    return mask(text).text


def _found(text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("联系电话13800001234，谢谢", "联系电话[手机号]，谢谢"),
        ("电话：138 0000 1234。", "电话：[手机号]。"),
        ("手机138-0000-1234", "手机[手机号]"),
        ("+86 138 0000 1234", "[手机号]"),
        ("(+86)13800001234", "[手机号]"),
        ("0086-13800001234", "[手机号]"),
        ("电话１３８００００１２３４", "电话[手机号]"),  # full-width digits
        ("电话138\u200b0000\u200c1234", "电话[手机号]"),  # zero-width inside
        ("电话一三八零零零零一二三四", "电话[手机号]"),  # read out
        ("座机0532-8888 8888", "座机[座机]"),
        ("座机(0532)88888888", "座机[座机]"),
        ("（0532）8888-8888转801", "[座机]"),
        ("客服400-123-4567", "客服[座机]"),
        ("电话：8888 6666", "电话：[座机]"),
        ("邮箱zhangsan88@163.com谢谢", "邮箱[邮箱]谢谢"),
        ("邮箱 WangXM@QQ.COM", "邮箱 [邮箱]"),
        ("邮箱wang(at)163.com", "邮箱[邮箱]"),
        ("一辆鲁B12345的车", "一辆[车牌]的车"),
        ("鲁B·D12345", "[车牌]"),
        ("鲁B D12345停在门口", "[车牌]停在门口"),
        ("鲁b12345", "[车牌]"),
        ("魯Ｂ１２３４５", "[车牌]"),
        ("京A12345D", "[车牌]"),
    ],
)
def test_numbers_and_addresses_of_contact(text: str, expected: str) -> None:
    assert _masked(text) == expected


def _id_number(body17: str) -> str:
    return body17 + next(c for c in "0123456789X" if id_checksum_ok(body17, c))


def test_id_card_checksum_and_birth_date() -> None:
    valid = _id_number("37020019800101901")
    assert _masked(f"身份证{valid}，") == "身份证[身份证]，"
    assert _masked(valid) == "[身份证]"  # the checksum alone vouches for it
    wrong = valid[:-1] + ("1" if valid[-1] != "1" else "2")
    assert _masked(f"订单{wrong}") == f"订单{wrong}"
    assert _masked(wrong) == wrong  # an 18-digit order number: no
    # A cue vouches for an ID whose checksum was mistyped (the simulator writes them so).
    assert _masked(f"身份证号{wrong}") == "身份证号[身份证]"
    assert _masked("身份证号37020019640605438Z") == "身份证号[身份证]"
    # The birth date must be a date: 1980-13-01 is none, with or without a cue.
    bad_date = _id_number("37020019801301901")
    assert _masked(bad_date) == bad_date
    x_id = _id_number("11010519491231002")
    assert _masked(x_id.lower()) == "[身份证]"
    assert _masked("370200 19800101 9011".replace("9011", valid[-4:])) == "[身份证]"
    assert _masked("证件号370200800101901") == "证件号[身份证]"  # 15-digit, old
    assert _masked("物流单号370202199001011237") == "物流单号370202199001011237"


def test_bank_card_luhn() -> None:
    body = "622202100112345678"
    card = body + next(d for d in "0123456789" if luhn_ok(body + d))
    assert luhn_ok(card)
    assert _masked(f"卡号{card}") == "卡号[银行卡]"
    spaced = " ".join(card[i : i + 4] for i in range(0, len(card), 4))
    assert _masked(f"退款打到{spaced}。") == "退款打到[银行卡]。"
    wrong = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert _masked(wrong) == wrong  # Luhn fails: a long number, not a card
    # ... unless the text says it is a card (a mistyped card number is still one).
    assert _masked(f"退到我的建行卡：{wrong}") == "退到我的建行卡：[银行卡]"
    # Luhn-valid but introduced as an order number, or not card-like without a cue.
    assert _masked(f"订单号{card}") == f"订单号{card}"
    order = "2024031512345678"
    order = order[:-1] + next(d for d in "0123456789" if luhn_ok(order[:-1] + d))
    assert _masked(order) == order
    # A card followed by an address number is cut at the separator.
    card16 = "6222 0213 0000 123" + next(d for d in "0123456789" if luhn_ok("622202130000123" + d))
    assert _masked(f"卡号{card16} 3号楼") == "卡号[银行卡] 3号楼"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我叫张三，家住香港中路61号", "我叫某某，家住香港中路61号"),
        ("本人王小明，反映个问题", "本人某某，反映个问题"),
        ("联系人:潘秀兰", "联系人:某某"),
        ("联系人：王女士", "联系人：某女士"),
        ("王女士来电反映", "某女士来电反映"),
        ("楼上的李先生天天装修", "楼上的某先生天天装修"),
        ("张师傅来修过", "某师傅来修过"),
        ("对门刘阿姨家", "对门某阿姨家"),
        ("姓名：艾力", "姓名：某某"),  # a field label vouches for any name
        ("我姓欧阳，", "我姓某，"),
        ("来电人熊桂英，联系电话15000009563，反映：", "来电人某某，联系电话[手机号]，反映："),
        ("市民张建国（电话：138 0000 1234）来电反映", "市民某某（电话：[手机号]）来电反映"),
        ("此致\n敬礼！\n张建国 138 0000 1234", "此致\n敬礼！\n某某 [手机号]"),
        ("聯繫人：張建國，", "聯繫人：某某，"),  # traditional
        ("馬師傅說", "某師傅說"),
        ("我叫张三住在李村", "我叫某某住在李村"),
        ("请联系我爱人陈淑芬，电话0532 8765 4321", "请联系我爱人某某，电话[座机]"),
        ("物业经理姓孙，叫孙大勇，电话打不通", "物业经理姓某，叫某某，电话打不通"),
        ("市民高芳说，", "市民某某说，"),
    ],
)
def test_names(text: str, expected: str) -> None:
    assert _masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "香港中路61号3号楼2单元501室，2024年3月15日18:30，共计13800元，200米，5户，三天",
        "王哥庄街道石老人海水浴场张村河李村街道金家岭刘家庄",
        "这位先生一位女士保安大爷门卫大爷环卫师傅物业师傅出租车师傅宿管阿姨",
        "语文老师班主任老师城管同志修车老板收费阿姨",
        "我叫了物业，我叫他们来看，本人于2024年反映，本人多次反映，本人是业主",
        "联系人未留，姓名：不详，姓名：未留",
        "市民广场市民中心市民反映来电人称来电人家楼下，我叫救护车来，业主群，居民楼，居民安全。",
        "A座1201，B1层，G20次列车，5G基站，鲁迅公园，宁夏路，云南路，邮编266071，12345热线",
        "订单号2024031512345678，快递单号773012345678901，工单号GD20240315001",
        "2024-03-15 08:30:00 打了110和120，20240315，1380元，下午三点左右",
        "黄岛区长江中路街道，即墨区鹤山路，胶州市扬州路3号",
        "叫车来拖，叫高手来，叫人来修，我女儿在上学，我爱人在家，谢谢",
    ],
)
def test_dispatch_text_is_not_masked(text: str) -> None:
    assert find_pii(text) == ()
    assert _masked(text) == text


def test_spans_index_the_original_text() -> None:
    text = "联系人：\u200b张建国，电话１３８\u200b0000 1234，车牌鲁B12345，邮箱a@qq.com"
    result = mask(text)
    assert [(s.type, text[s.start : s.end]) for s in result.spans] == [
        ("name", "张建国"),
        ("phone", "１３８\u200b0000 1234"),
        ("plate", "鲁B12345"),
        ("email", "a@qq.com"),
    ]
    # Rebuilding the masked text from the spans gives mask()'s text.
    rebuilt, at = [], 0
    for span in result.spans:
        rebuilt.append(text[at : span.start])
        rebuilt.append(PLACEHOLDERS.get(span.type, FULL_NAME_PLACEHOLDER))
        at = span.end
    rebuilt.append(text[at:])
    assert "".join(rebuilt) == result.text
    assert SURNAME_PLACEHOLDER + "女士" == _masked("王女士")


def test_fold_keeps_positions() -> None:
    folded = fold("聯繫人：１３８")
    assert folded.text == "联系人：138"  # Chinese punctuation stays
    assert folded.origin is None
    folded = fold("1\u200b2\ufeff3")
    assert folded.text == "123"
    assert folded.to_original(1, 3) == (2, 5)


# --- hostile input ------------------------------------------------------------------------------
def test_empty_emoji_and_injection_strings() -> None:
    assert mask("") == pii.MaskResult("", ())
    assert mask("😡😡🤬🙏") == pii.MaskResult("😡😡🤬🙏", ())
    for text in (
        "'; DROP TABLE x; --",
        "<script>alert(1)</script>",
        "${jndi:ldap://x}",
        "\x00\x01",
    ):
        assert mask(text).text == text
    assert _masked("<script>alert('13800001234')</script>") == "<script>alert('[手机号]')</script>"
    assert _masked("Robert'); DROP TABLE x;-- 鲁B12345") == "Robert'); DROP TABLE x;-- [车牌]"


def test_mixed_scripts() -> None:
    text = "俺家住台東街道，電話１３８-0000-1234，找王師傅，email: li.hua@163.com，plz"
    assert _masked(text) == "俺家住台東街道，電話[手机号]，找某師傅，email: [邮箱]，plz"


def test_100_kb_text_is_masked_whole() -> None:
    unit = "香港中路61号3号楼2单元501室，联系电话138 0000 1234，王女士。"
    text = unit * (100_000 // len(unit))
    result = mask(text)
    n = len(text) // len(unit)
    assert [s.type for s in result.spans].count("phone") == n
    assert [s.type for s in result.spans].count("name") == n
    assert result.text == "香港中路61号3号楼2单元501室，联系电话[手机号]，某女士。" * n
    # Long runs of what the patterns look for: correct answers, no blow-up.
    assert find_pii("1" * 100_000) == ()
    assert find_pii("1 " * 50_000) == ()
    assert find_pii("a" * 100_000 + "@") == ()
    assert len(find_pii("王女士" * 30_000)) == 30_000
    assert find_pii("\u200b" * 100_000) == ()


def test_patterns_are_linear() -> None:
    for module in (pii, content_screen, appeal_analysis):
        assert_linear_patterns(module)


def test_traditional_table_covers_the_words_matched() -> None:
    """Every character of the words pii, content_screen and appeal_analysis match has its
    traditional forms folded (the table in pii was generated from jionlp's; regenerate it
    when a word with a new character is added)."""
    from processors.gazetteer import load_lexicon

    chars: set[str] = set()
    for module in (pii, content_screen, appeal_analysis):
        source = Path(str(module.__file__)).read_text(encoding="utf-8")
        if module is pii:
            start = source.index("_TRAD_PAIRS = (")
            source = source[:start] + source[source.index("\n)\n", start) :]
        chars |= {c for c in source if "\u4e00" <= c <= "\u9fff"}
    missing = sorted(
        f"{t}{s}"
        for t, s in load_lexicon().traditional.items()
        if s in chars and t not in chars and fold(t).text == t and t != s
    )
    assert not missing, "add to pii._TRAD_PAIRS: " + " ".join(missing)


# --- the evaluation set and the dispatch-relevant text -------------------------------------------
@pytest.fixture(scope="module")
def cases(domain: Domain) -> list[pii.PiiSpan | object]:
    return pii_cases(seed=23, n=400, domain=domain)  # type: ignore[return-value]


def test_cases_are_reproducible_and_labelled(domain: Domain, cases: list) -> None:
    again = pii_cases(seed=23, n=400, domain=domain)
    assert [c.text for c in again] == [c.text for c in cases]
    types_seen = {s.type for c in cases for s in c.spans}
    assert types_seen == set(pii.PII_TYPES)
    for case in cases[:50]:
        for span in case.spans:
            assert isinstance(span, PiiSpan)
            assert 0 <= span.start < span.end <= len(case.text)


def test_masking_meets_its_targets(cases: list) -> None:
    report = masking_report(cases)
    per_type = report["per_type"]
    assert isinstance(per_type, dict)
    for kind in ("phone", "id_card", "bank_card", "email", "plate"):
        assert per_type[kind]["recall"] >= 0.99, (kind, report)
    assert per_type["name"]["recall"] >= 0.95, report
    assert per_type["landline"]["recall"] >= 0.95, report
    overall = report["overall"]
    assert isinstance(overall, dict)
    assert overall["precision"] >= 0.98, report


def test_report_counts_misses_and_false_positives(cases: list) -> None:
    def nothing(text: str) -> tuple[PiiSpan, ...]:
        return ()

    def everything(text: str) -> tuple[PiiSpan, ...]:
        return (PiiSpan("phone", 0, len(text)),)

    empty = masking_report(cases[:20], finder=nothing)
    assert empty["overall"]["recall"] == 0.0  # type: ignore[index]
    greedy = masking_report(cases[:20], finder=everything)
    assert greedy["per_type"]["phone"]["masked_recall"] == 1.0  # type: ignore[index]


def test_addresses_survive_masking(domain: Domain, cases: list) -> None:
    """District, street and road read from 200 texts (each with personal data) are the same
    before and after masking: measured 200/200 (and 2000/2000 on seed 11)."""
    from processors.address import live_analyser

    analyser = live_analyser(domain)
    same = 0
    for case in cases[:200]:
        masked = mask(case.text).text
        before, after = analyser.analyse(case.text), analyser.analyse(masked)
        if (before.district, before.street, before.road) == (
            after.district,
            after.street,
            after.road,
        ):
            same += 1
    assert same >= 198, same
