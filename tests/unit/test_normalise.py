"""normalise_text: NFKC, invisible characters, whitespace folding and size limits."""

from __future__ import annotations

import unicodedata

import pytest

import processors.ingest as ingest_module
from processors.ingest import normalise_text
from schemas.errors import ErrorKind, RecordError

MAX = 100


def norm(text: str, max_chars: int = MAX) -> str:
    return normalise_text(text, max_chars, "text")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("１２３４５", "12345"),
        ("ＡＢＣｘｙｚ", "ABCxyz"),
        ("车牌鲁Ｂ１２３４５", "车牌鲁B12345"),
        ("（１２３４５）", "(12345)"),
        ("电话：１３９１２３４５６７８", "电话:13912345678"),
        ("ｶﾀｶﾅ", "カタカナ"),  # half-width katakana widened
        ("㎡", "m2"),
        ("市南区八大关", "市南区八大关"),  # plain Chinese is untouched
    ],
)
def test_nfkc(raw, expected):
    assert norm(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("垃圾\u3000堆放", "垃圾 堆放"),
        ("垃圾\u3000\u3000\u3000堆放", "垃圾 堆放"),
        ("a \t\u00a0 b", "a b"),
        ("  前后空白  ", "前后空白"),
        ("\u3000前后全角空格\u3000", "前后全角空格"),
        ("a\tb", "a b"),
    ],
)
def test_spaces_folded(raw, expected):
    assert norm(raw) == expected


@pytest.mark.parametrize(
    "invisible",
    [
        "\x00",
        "\x07",
        "\x08",
        "\x0b",
        "\x0c",
        "\x1b",
        "\x1f",
        "\x7f",
        "\u200b",  # zero-width space
        "\u200c",
        "\u200d",
        "\u200e",  # LRM
        "\u200f",
        "\u2028",
        "\u2029",
        "\u2060",  # word joiner
        "\ufeff",  # BOM / zero-width no-break space
    ],
)
def test_control_and_zero_width_removed(invisible):
    assert norm(f"井盖{invisible}丢失") == "井盖丢失"
    assert norm(f"{invisible}井盖丢失{invisible}") == "井盖丢失"


@pytest.mark.parametrize("code", [0x80, 0x85, 0x9B, 0x9F])
def test_c1_control_characters_removed(code):
    # C1 controls are Unicode category Cc like the C0 ones the module removes.
    char = chr(code)
    assert unicodedata.category(char) == "Cc"
    assert norm(f"井盖{char}丢失") == "井盖丢失"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("第一行\r\n第二行", "第一行\n第二行"),
        ("第一行\r第二行", "第一行\n第二行"),
        ("第一行\n第二行", "第一行\n第二行"),
        ("a\r\n\r\n\r\nb", "a\nb"),
        ("a\n\n\n\nb", "a\nb"),
        ("a\n  \n\t\n\u3000\nb", "a\nb"),
        ("a  \n  b", "a\nb"),
        ("\n\n a \n\n", "a"),
        ("a\n\u200b\nb", "a\nb"),
    ],
)
def test_newlines_and_blank_lines(raw, expected):
    assert norm(raw) == expected


@pytest.mark.parametrize("raw", ["", " ", "\u3000\u3000", "\n\r\n\t", "\u200b\ufeff", "\x00 \x7f"])
def test_empty_after_normalisation_is_an_error(raw):
    with pytest.raises(RecordError) as info:
        normalise_text(raw, MAX, "description")
    assert info.value.kind is ErrorKind.INVALID_FIELD
    assert info.value.reason.startswith("description:")
    assert "empty" in info.value.reason


def test_exactly_max_chars_is_accepted():
    assert norm("字" * MAX) == "字" * MAX


def test_over_max_chars_is_oversize():
    with pytest.raises(RecordError) as info:
        normalise_text("字" * (MAX + 1), MAX, "text")
    assert info.value.kind is ErrorKind.OVERSIZE
    assert info.value.reason.startswith("text:")
    assert str(MAX) in info.value.reason


def test_limit_applies_after_normalisation():
    # Lots of whitespace and invisibles that vanish: the normalised text fits.
    raw = "a" + " " * (MAX * 2) + "\u200b" * MAX + "b"
    assert len(raw) > MAX
    assert norm(raw) == "a b"


def test_nfkc_expansion_counts_against_limit():
    # U+FDFA expands to 18 characters under NFKC.
    raw = "\ufdfa" * 10
    assert len(raw) <= MAX
    with pytest.raises(RecordError) as info:
        norm(raw)
    assert info.value.kind is ErrorKind.OVERSIZE


def test_huge_string_refused_before_normalising(monkeypatch):
    calls: list[str] = []

    class Spy:
        @staticmethod
        def normalize(form: str, text: str) -> str:
            calls.append(form)
            return unicodedata.normalize(form, text)

    monkeypatch.setattr(ingest_module, "unicodedata", Spy)
    huge = "垃" * 10_000_000
    with pytest.raises(RecordError) as info:
        normalise_text(huge, 4000, "text")
    assert info.value.kind is ErrorKind.OVERSIZE
    assert str(len(huge)) in info.value.reason
    assert calls == []
    # The spy does record calls for normal-size input.
    normalise_text("ok", 4000, "text")
    assert calls == ["NFKC"]
