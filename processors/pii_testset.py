"""An evaluation set for ``processors.pii``: simulated report texts with personal data of
every type inserted at known offsets, in plain and hostile forms, plus decoys that must not
be masked (dates, times, amounts, counts, house numbers, order numbers).

    python -m processors.pii_testset --n 2000 [--seed 7] [--json]

The simulator's own caller contacts (names, phones, ID numbers it writes into hotline
texts) are labelled too. Invented values follow the simulator's convention so that no real
person is named: mobiles carry 0000 in the middle, ID numbers use the city-level area code
370200 with a sequence number from 900 (valid checksum: the masker must check it), bank
cards start 6200 00.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from processors.pii import PII_TYPES, PiiSpan, find_pii, fold, luhn_ok
from schemas.domain import Domain

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}
_ZW = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")


@dataclass(frozen=True, slots=True)
class Decoy:
    kind: str  # date, time, amount, count, house_number, order_number, hotline, postcode
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PiiCase:
    text: str
    spans: tuple[PiiSpan, ...]  # every piece of personal data in text
    decoys: tuple[Decoy, ...] = ()  # text that looks like data and is not


# --- values ----------------------------------------------------------------------------------
_PREFIXES = (
    "130",
    "131",
    "133",
    "135",
    "136",
    "138",
    "139",
    "147",
    "150",
    "152",
    "155",
    "158",
    "166",
    "173",
    "176",
    "177",
    "180",
    "183",
    "186",
    "189",
    "191",
    "199",
)
_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董程曹袁邓许傅沈曾彭吕"
_COMPOUND = ("欧阳", "司马", "诸葛", "上官", "东方")
_GIVEN = tuple(
    "建国 秀英 志强 丽娟 海涛 红梅 晓东 玉兰 春燕 伟 芳 磊 静 敏 洋 勇 军 杰 娜 桂英 秀兰 明 强 "
    "丽 永刚 淑珍 文华 子涵 浩然 欣怡 俊杰 雨桐 宇航 小明 德华 建华 婷 鹏 辉 超 波 霞 刚 桂兰 "
    "金凤 玉梅 志勇 亮 立新 晓燕 思远 一鸣 梓萱 佳怡 振华 凤英 国强 春生".split()
)
_HONORIFICS = ("女士", "先生", "师傅", "阿姨", "大爷", "大姐", "经理", "老师", "主任")
_TRAD_NAME = str.maketrans(
    "张刘陈杨赵黄吴孙马郑谢韩冯邓许沈彭吕国华东兰涛红梅强丽刚凤杰伟勇军",
    "張劉陳楊趙黃吳孫馬鄭謝韓馮鄧許沈彭呂國華東蘭濤紅梅強麗剛鳳傑偉勇軍",
)
_PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_MAIL_USERS = (
    "zhangsan",
    "wangxm",
    "li.hua",
    "liu_yang",
    "chen88",
    "qd_resident",
    "zhao.lei",
    "sunny",
    "huanghe2020",
    "xiaoming",
)
_MAIL_DOMAINS = (
    "qq.com",
    "163.com",
    "126.com",
    "sina.com",
    "gmail.com",
    "foxmail.com",
    "example.com",
    "yeah.net",
    "hotmail.com",
    "sohu.com",
)


_SPOKEN = ("零一二三四五六七八九", "〇幺二三四五六七八九")


def _fw(s: str) -> str:
    return s.translate(_FULLWIDTH)


def _zw(rng: random.Random, s: str) -> str:
    """Zero-width characters slipped between some characters."""
    out = []
    for i, ch in enumerate(s):
        out.append(ch)
        if i < len(s) - 1 and rng.random() < 0.3:
            out.append(rng.choice(_ZW))
    return "".join(out)


def _phone(rng: random.Random) -> str:
    digits = f"{rng.choice(_PREFIXES)}0000{rng.randrange(10000):04d}"
    form = rng.random()
    if form < 0.3:
        return digits
    if form < 0.45:
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    if form < 0.55:
        return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
    if form < 0.62:
        return rng.choice(("+86 ", "+86", "86-", "0086 ", "(+86)", "+86-")) + digits
    if form < 0.72:
        return _fw(digits)
    if form < 0.82:
        return _zw(rng, digits)
    if form < 0.88:
        return f"{digits[:3]}.{digits[3:7]}.{digits[7:]}"
    if form < 0.92:
        return _fw(digits[:3]) + "-" + digits[3:]
    if form < 0.96:
        return f"{digits[:3]} - {digits[3:7]} - {digits[7:]}"
    # Read out, as a hotline operator may type it.
    return digits.translate(str.maketrans("0123456789", rng.choice(_SPOKEN)))


def _landline(rng: random.Random) -> str:
    local = f"8{rng.randrange(1000):03d}{rng.randrange(10000):04d}"
    form = rng.random()
    if form < 0.25:
        return f"0532-{local}"
    if form < 0.4:
        return f"0532-{local[:4]} {local[4:]}"
    if form < 0.5:
        return f"(0532){local}"
    if form < 0.6:
        return f"（0532）{local[:4]}-{local[4:]}"
    if form < 0.68:
        return f"0532{local}"
    if form < 0.76:
        return f"0532 {local}"
    if form < 0.84:
        return f"{rng.choice(('400', '800'))}-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}"
    if form < 0.9:
        return f"0532-{local}转{rng.randrange(100, 999)}"
    return _fw(f"0532-{local}")


def _id_number(rng: random.Random) -> str:
    born = date(1940, 1, 1).toordinal() + rng.randrange(25000)
    d = date.fromordinal(born)
    body = f"370200{d:%Y%m%d}{rng.randrange(900, 1000)}"
    check = _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
    number = body + check
    form = rng.random()
    if form < 0.55:
        return number
    if form < 0.65:
        return number[:-1] + ("x" if check == "X" else check)
    if form < 0.75:
        return f"{number[:6]} {number[6:14]} {number[14:]}"
    if form < 0.85:
        return _fw(number)
    if form < 0.92:
        return _zw(rng, number)
    # The old 15-digit form: 2-digit year, no check character.
    return f"370200{d:%y%m%d}{rng.randrange(900, 1000)}"


def _plate(rng: random.Random) -> str:
    province = rng.choice(_PLATE_PROVINCES)
    letter = rng.choice(_PLATE_LETTERS)
    if rng.random() < 0.25:  # new-energy
        tail = (
            rng.choice("DF")
            + rng.choice(_PLATE_LETTERS + "0123456789")
            + (f"{rng.randrange(10000):04d}")
        )
        if rng.random() < 0.3:
            tail = f"{rng.randrange(100000):05d}" + rng.choice("DF")
    else:
        chars = [str(rng.randrange(10)) for _ in range(5)]
        for _ in range(rng.choice((0, 0, 1, 2))):
            chars[rng.randrange(5)] = rng.choice(_PLATE_LETTERS)
        if sum(c.isdigit() for c in chars) < 3:
            chars[0] = "1"
        tail = "".join(chars)
    form = rng.random()
    if form < 0.5:
        return f"{province}{letter}{tail}"
    if form < 0.62:
        return f"{province}{letter}·{tail}"
    if form < 0.72:
        return f"{province}{letter} {tail}"
    if form < 0.8:
        return f"{province}{letter.lower()}{tail.lower()}"
    if form < 0.88:
        return f"{province}{letter}-{tail}"
    if form < 0.94:
        return "魯" + _fw(letter + tail)
    return f"{province}{letter}{tail}"


def _card(rng: random.Random) -> str:
    length = rng.choice((16, 16, 17, 18, 19, 19))
    body = "620000" + "".join(str(rng.randrange(10)) for _ in range(length - 7))
    check = next(str(d) for d in range(10) if luhn_ok(body + str(d)))
    number = body + check
    form = rng.random()
    if form < 0.4:
        return number
    if form < 0.75:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    if form < 0.85:
        return "-".join(number[i : i + 4] for i in range(0, len(number), 4))
    if form < 0.93:
        return _fw(number)
    return _zw(rng, number)


def _email(rng: random.Random) -> str:
    user = rng.choice(_MAIL_USERS)
    if rng.random() < 0.4:
        user += str(rng.randrange(1, 9999))
    if rng.random() < 0.15:
        user = str(rng.randrange(10**7, 10**10))  # QQ mail: the QQ number
    domain = rng.choice(_MAIL_DOMAINS)
    form = rng.random()
    if form < 0.7:
        return f"{user}@{domain}"
    if form < 0.8:
        return f"{user}@{domain}".upper()
    if form < 0.9:
        return f"{user}＠{domain}"
    return f"{user}(at){domain}"


# --- snippets: (text, [(type, start, end)]) ------------------------------------------------
Snippet = tuple[str, list[tuple[str, int, int]]]


def _wrap(before: str, value: str, after: str, kind: str) -> Snippet:
    return before + value + after, [(kind, len(before), len(before) + len(value))]


def _snippet_phone(rng: random.Random) -> Snippet:
    lead = rng.choice(("联系电话：", "电话", "手机号", "我的手机", "，", "有事打", "電話：", "tel:",
                       "手机：", "联系方式 ", "回电"))  # fmt: skip
    return _wrap(lead, _phone(rng), rng.choice(("，", "。", "", " ", "）")), "phone")


def _snippet_landline(rng: random.Random) -> Snippet:
    lead = rng.choice(("座机", "家里电话", "联系电话：", "，", "办公电话", "固话："))
    return _wrap(lead, _landline(rng), rng.choice(("，", "。", "")), "landline")


def _snippet_id(rng: random.Random) -> Snippet:
    lead = rng.choice(("身份证号", "身份证号码：", "身份證：", "证件号", "，", "ID:", "身份证"))
    return _wrap(lead, _id_number(rng), rng.choice(("，", "。", "）")), "id_card")


def _snippet_plate(rng: random.Random) -> Snippet:
    before, after = rng.choice((
        ("车牌号", "，"), ("一辆", "的白色轿车"), ("车牌", "的车"), ("，", "天天停这"),
        ("被", "挡住了"), ("那辆", "。"), ("车号：", " "),
    ))  # fmt: skip
    return _wrap(before, _plate(rng), after, "plate")


def _snippet_card(rng: random.Random) -> Snippet:
    lead = rng.choice(("卡号", "银行卡号：", "退款请打到", "账号 ", "，", "工资卡"))
    return _wrap(lead, _card(rng), rng.choice(("，", "。", "")), "bank_card")


def _snippet_email(rng: random.Random) -> Snippet:
    lead = rng.choice(("邮箱", "邮箱：", "请回复到", "，", "电子邮件 ", "e-mail: "))
    return _wrap(lead, _email(rng), rng.choice(("，", "。", " ", "")), "email")


def _person(rng: random.Random) -> tuple[str, str]:
    surname = rng.choice(_COMPOUND) if rng.random() < 0.05 else rng.choice(_SURNAMES)
    return surname, rng.choice(_GIVEN)


_NAME_CUES = (
    "我叫", "本人", "联系人：", "姓名：", "来电人", "市民", "联系人", "聯繫人：", "我叫 ", "签名：",
    "反映人：", "本人叫", "户主",
)  # fmt: skip


def _snippet_name(rng: random.Random) -> Snippet:
    surname, given = _person(rng)
    full = surname + given
    if rng.random() < 0.1:
        full = full.translate(_TRAD_NAME)
        surname = full[: len(surname)]
    r = rng.random()
    if r < 0.35:  # surname + form of address: the surname is the personal part
        before = rng.choice(
            ("，", "市民", "来电人", "我是", "找", "物业的", "联系人", "。", "楼上的")
        )
        text = before + surname + rng.choice(_HONORIFICS) + rng.choice(("，", "反映", "说", "。"))
        return text, [("name", len(before), len(before) + len(surname))]
    if r < 0.45:
        before = rng.choice(("我姓", "本人姓"))
        return _wrap(before, surname, rng.choice(("，", "。")), "name")
    if r < 0.55:  # a signature before a contact number
        number = _phone(rng)
        text = f"\n{full} {number}"
        return text, [("name", 1, 1 + len(full)), ("phone", 2 + len(full), len(text))]
    before = rng.choice(_NAME_CUES)
    after = rng.choice(("，", "。", "（", "来电", "反映", "住在", "说", " "))
    return _wrap(before, full, after, "name")


_SNIPPETS: tuple[Callable[[random.Random], Snippet], ...] = (
    _snippet_phone, _snippet_landline, _snippet_id, _snippet_plate, _snippet_card,
    _snippet_email, _snippet_name,
)  # fmt: skip


# --- decoys: things that look like data and are not -----------------------------------------
def _decoy(rng: random.Random) -> tuple[str, str]:
    r = rng.randrange(14)
    year, month, day = rng.randrange(2015, 2026), rng.randrange(1, 13), rng.randrange(1, 29)
    if r == 0:
        return f"{year}年{month}月{day}日", "date"
    if r == 1:
        return f"{year}-{month:02d}-{day:02d}", "date"
    if r == 2:
        return f"{year}{month:02d}{day:02d}", "date"
    if r == 3:
        return f"{rng.randrange(24)}:{rng.randrange(60):02d}", "time"
    if r == 4:
        return f"{rng.randrange(100, 99999)}元", "amount"
    if r == 5:
        return f"{rng.randrange(1, 9999)}.{rng.randrange(100):02d}元", "amount"
    if r == 6:
        return (
            f"{rng.randrange(2, 500)}{rng.choice(('户', '米', '天', '辆', '人', '棵', '平方米'))}",
            "count",
        )
    if r == 7:
        return (
            f"{rng.randrange(1, 40)}号楼{rng.randrange(1, 8)}单元{rng.randrange(1, 33)}0"
            f"{rng.randrange(1, 5)}室"
        ), "house_number"
    if r == 8:
        road = rng.choice(("香港中路", "延安三路", "长江中路", "海尔路", "重庆南路"))
        return f"{road}{rng.randrange(1, 300)}号", "house_number"
    if r == 9:
        # A random 18-digit order number: its checksum fails in 10 of 11 cases; redraw
        # until it fails, so that the decoy is surely no ID.
        while True:
            body = f"{rng.randrange(10**16, 10**17)}"
            number = body + str(rng.randrange(10))
            if (
                _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
                != number[-1]
            ):
                return f"订单号{number}", "order_number"
    if r == 10:
        while True:
            number = f"{rng.randrange(10**15, 10**16)}"
            if not luhn_ok(number) or number[0] not in "3456":
                return f"快递单号{number}", "order_number"
    if r == 11:
        return rng.choice(("12345热线", "打110", "120急救", "119", "12315", "96716")), "hotline"
    if r == 12:
        return f"邮编2660{rng.randrange(10, 99)}", "postcode"
    return f"工单号GD{year}{month:02d}{day:02d}{rng.randrange(1000):03d}", "order_number"


# --- the simulator's own contacts --------------------------------------------------------------
_SIM_ID = re.compile(r"370200\d{11}Z")


def _digits_pattern(digits: str) -> re.Pattern[str]:
    return re.compile(r"[ \-]?".join(digits))


def _simulator_spans(text: str, name: str | None, phone: str | None) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    if phone:
        spans += [("phone", m.start(), m.end()) for m in _digits_pattern(phone).finditer(text)]
    if name:
        # Looked up in the folded view, where a traditional 馬師傅 reads 马师傅.
        folded = fold(text)
        honorific = name[1:] in ("先生", "女士", "师傅", "阿姨", "大爷", "大姐")
        at = folded.text.find(name)
        while at != -1:
            end = at + (1 if honorific else len(name))
            spans.append(("name", *folded.to_original(at, end)))
            at = folded.text.find(name, at + len(name))
    spans += [("id_card", m.start(), m.end()) for m in _SIM_ID.finditer(text)]
    return spans


_PUNCT = "，。！？；：、,.!?;: \n（）()"


def _boundaries(text: str) -> list[int]:
    cuts = [0, len(text)]
    cuts += [i + 1 for i, ch in enumerate(text) if ch in "，。！？；\n,!?"]
    return sorted(set(cuts))


def _shifted(marks: list[tuple[str, int, int]], at: int, by: int) -> list[tuple[str, int, int]]:
    return [(t, s + by, e + by) if s >= at else (t, s, e) for t, s, e in marks]


def _load_domain() -> Domain:
    from streams.settings import Settings  # only for the command line and default use

    return Domain.load(Settings().domain_file)


def pii_cases(seed: int, n: int, domain: Domain | None = None) -> list[PiiCase]:
    """``n`` cases from simulated texts; the same (seed, n, domain) gives the same cases."""
    from models.simulator import generate_history

    domain = domain or _load_domain()
    history = generate_history(domain, n, seed=seed, start=date(2024, 1, 1), end=date(2024, 12, 31))
    rng = random.Random(seed * 7919 + 1)
    cases: list[PiiCase] = []
    for k, record in enumerate(history):
        text = record.text
        spans = _simulator_spans(text, record.caller_name, record.caller_phone)
        decoys: list[tuple[str, int, int]] = []
        # Every type turns up in every seven cases at least; most cases get two or three.
        inserts = [_SNIPPETS[k % len(_SNIPPETS)]]
        inserts += [rng.choice(_SNIPPETS) for _ in range(rng.choice((0, 1, 1, 2)))]
        items: list[Snippet | tuple[str, str]] = [f(rng) for f in inserts]
        items += [_decoy(rng) for _ in range(rng.choice((0, 1, 1, 2)))]
        rng.shuffle(items)
        for item in items:
            at = rng.choice(_boundaries(text))
            piece, marks = item
            added: list[tuple[str, int, int]] = []
            added_decoys: list[tuple[str, int, int]] = []
            if isinstance(marks, str):  # a decoy, between words that keep it apart
                lead = rng.choice(("，", "于", "约", "共", "在"))
                added_decoys.append((marks, at + len(lead), at + len(lead) + len(piece)))
                piece = lead + piece + rng.choice(("，", "。", "左右"))
            else:
                added = [(kind, at + s, at + e) for kind, s, e in marks]
            # Keep a number or an address from running into its neighbours' characters
            # ("…13800001234370200…" would be one number to a human reader too).
            if at < len(text) and piece[-1] not in _PUNCT and text[at] not in _PUNCT:
                piece += "，"
            if at > 0 and text[at - 1].isascii() and text[at - 1].isalnum():
                if piece[0].isascii() and piece[0].isalnum():
                    piece = "，" + piece
                    added = [(kind, s + 1, e + 1) for kind, s, e in added]
                    added_decoys = [(kind, s + 1, e + 1) for kind, s, e in added_decoys]
            spans = _shifted(spans, at, len(piece)) + added
            decoys = _shifted(decoys, at, len(piece)) + added_decoys
            text = text[:at] + piece + text[at:]
        cases.append(
            PiiCase(
                text=text,
                spans=tuple(PiiSpan(t, s, e) for t, s, e in sorted(spans, key=lambda x: x[1])),
                decoys=tuple(Decoy(t, s, e) for t, s, e in sorted(decoys, key=lambda x: x[1])),
            )
        )
    return cases


# --- the report ---------------------------------------------------------------------------------
_IGNORABLE = re.compile(r"[\s\-·.,，:：()（）+\u200b-\u200d\u2060\ufeff]")


def _covered(text: str, span: PiiSpan, predicted: Sequence[PiiSpan], same_type: bool) -> bool:
    """Whether every meaningful character of ``span`` lies in a predicted span."""
    marks = [p for p in predicted if not same_type or p.type == span.type]
    for i in range(span.start, span.end):
        if _IGNORABLE.match(text[i]):
            continue
        if not any(p.start <= i < p.end for p in marks):
            return False
    return True


def _overlaps(a: PiiSpan | Decoy, b: PiiSpan | Decoy) -> bool:
    return a.start < b.end and b.start < a.end


def write_masking_set(cases: Sequence[PiiCase], out_dir: Path) -> tuple[Path, Path]:
    """``masking.jsonl`` (``citystream mask`` input: ``{"id", "text"}``) and
    ``masking.truth.jsonl`` (the text, its spans and its decoys)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source, truth = out_dir / "masking.jsonl", out_dir / "masking.truth.jsonl"
    with source.open("w", encoding="utf-8") as src, truth.open("w", encoding="utf-8") as tru:
        for k, case in enumerate(cases):
            case_id = f"pii-{k}"
            src.write(json.dumps({"id": case_id, "text": case.text}, ensure_ascii=False) + "\n")
            tru.write(json.dumps({
                "id": case_id, "text": case.text,
                "spans": [[s.type, s.start, s.end] for s in case.spans],
                "decoys": [[d.kind, d.start, d.end] for d in case.decoys],
            }, ensure_ascii=False) + "\n")
    return source, truth


def read_masking_truth(path: Path) -> list[tuple[str, PiiCase]]:
    from streams.batch import read_jsonl

    return [
        (item["id"], PiiCase(item["text"],
                             tuple(PiiSpan(t, a, b) for t, a, b in item["spans"]),
                             tuple(Decoy(k, a, b) for k, a, b in item["decoys"])))
        for item in read_jsonl(path)
    ]


def masking_report(
    cases: Sequence[PiiCase], finder: Callable[[str], tuple[PiiSpan, ...]] = find_pii
) -> dict[str, object]:
    """Recall and precision per type of ``finder`` (``pii.find_pii``) on ``cases``.

    recall: true spans whose characters a predicted span of the same type covers
    (``masked_recall``: of any type; a phone masked as a landline is still hidden);
    precision: predicted spans that overlap a true span of the same type. False positives
    (predicted spans overlapping no true span) are counted by the decoy they hit.
    """
    stats = {
        t: {"true": 0, "found": 0, "masked": 0, "predicted": 0, "correct": 0} for t in PII_TYPES
    }
    false_positives = 0
    by_decoy: dict[str, int] = {}
    decoys_total: dict[str, int] = {}
    fp_examples: list[str] = []
    miss_examples: list[str] = []
    predicted_total = 0
    for case in cases:
        predicted = finder(case.text)
        for span in case.spans:
            s = stats[span.type]
            s["true"] += 1
            if _covered(case.text, span, predicted, same_type=True):
                s["found"] += 1
            elif len(miss_examples) < 20:
                miss_examples.append(f"{span.type}: {case.text[span.start : span.end]!r}")
            if _covered(case.text, span, predicted, same_type=False):
                s["masked"] += 1
        for decoy in case.decoys:
            decoys_total[decoy.kind] = decoys_total.get(decoy.kind, 0) + 1
        for p in predicted:
            predicted_total += 1
            stats[p.type]["predicted"] += 1
            if any(_overlaps(p, t) and t.type == p.type for t in case.spans):
                stats[p.type]["correct"] += 1
            if not any(_overlaps(p, t) for t in case.spans):
                false_positives += 1
                hit = next((d.kind for d in case.decoys if _overlaps(p, d)), "other text")
                by_decoy[hit] = by_decoy.get(hit, 0) + 1
                if len(fp_examples) < 20:
                    lo, hi = max(0, p.start - 8), min(len(case.text), p.end + 8)
                    fp_examples.append(
                        f"{p.type}: {case.text[p.start : p.end]!r} in {case.text[lo:hi]!r}"
                    )
    per_type: dict[str, dict[str, float | int]] = {}
    for t, s in stats.items():
        per_type[t] = {
            "true": s["true"],
            "recall": round(s["found"] / s["true"], 4) if s["true"] else 1.0,
            "masked_recall": round(s["masked"] / s["true"], 4) if s["true"] else 1.0,
            "predicted": s["predicted"],
            "precision": round(s["correct"] / s["predicted"], 4) if s["predicted"] else 1.0,
        }
    true_total = sum(s["true"] for s in stats.values())
    return {
        "cases": len(cases),
        "per_type": per_type,
        "overall": {
            "true": true_total,
            "recall": round(sum(s["found"] for s in stats.values()) / true_total, 4)
            if true_total
            else 1.0,
            "predicted": predicted_total,
            "precision": round(1 - false_positives / predicted_total, 4)
            if predicted_total
            else 1.0,
            "false_positives": false_positives,
        },
        "decoys": decoys_total,
        "false_positives_by_decoy": by_decoy,
        "false_positive_examples": fp_examples,
        "miss_examples": miss_examples,
    }


def _print(report: dict[str, object]) -> None:
    print(f"cases: {report['cases']}")
    print(
        f"{'type':<10} {'true':>6} {'recall':>8} {'masked':>8} {'predicted':>10} {'precision':>10}"
    )
    per_type = report["per_type"]
    assert isinstance(per_type, dict)
    for t, s in per_type.items():
        print(
            f"{t:<10} {s['true']:>6} {s['recall']:>8.4f} {s['masked_recall']:>8.4f} "
            f"{s['predicted']:>10} {s['precision']:>10.4f}"
        )
    print(f"overall: {json.dumps(report['overall'])}")
    print(f"decoys inserted: {json.dumps(report['decoys'], ensure_ascii=False)}")
    by_decoy = json.dumps(report["false_positives_by_decoy"], ensure_ascii=False)
    print(f"false positives by decoy: {by_decoy}")
    for key in ("false_positive_examples", "miss_examples"):
        examples = report[key]
        assert isinstance(examples, list)
        if examples:
            print(f"{key}:")
            for e in examples:
                print(f"  {e}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = masking_report(pii_cases(args.seed, args.n))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print(report)


if __name__ == "__main__":
    main()
