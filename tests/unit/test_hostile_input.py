"""Hostile input through every pure stage of issue #6: very long text, only emoji, mixed
scripts (RTL + CJK + Latin), zero-width and control characters, lone surrogates, NUL,
and injection-looking strings in the fields that end up in SQL.

Each stage either gives a sane output or, at ingest, a typed dead letter with a reason;
none raises."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from processors.appeal_analysis import analyse
from processors.content_screen import CATEGORIES, screen
from processors.ingest import IngestContext, SourceMessage, StoredRow, ingest
from processors.merge import (
    CaseIndex,
    CaseState,
    MergePolicy,
    MergeReport,
    place_signature,
    report_from_decision,
)
from processors.pii import PII_TYPES, find_pii, mask
from processors.report import (
    CASE_COLUMNS,
    CASE_COUNT_COLUMNS,
    ReportPeriod,
    report_queries,
)
from processors.report_run import generate_report
from processors.similar import SearchFilters, similar_sql, where_clause
from schemas.dashboard import panel
from schemas.domain import Domain
from schemas.errors import DeadLetter, ErrorKind
from schemas.records import DispatchDecision
from streams.clickhouse import QueryResult

INJECTION = "'; DROP TABLE citizen_appeals_log; --"
LONG_CJK = "香港中路路灯不亮，晚上很黑。" * 7200  # 100,800 characters
HOSTILE: dict[str, str] = {
    "empty": "",
    "blank": " \t\n\u3000",
    "long_cjk": LONG_CJK,
    "long_ascii": "A" * 100_000,
    "long_digits": "1" * 100_000,  # one number of no known length
    "only_emoji": "😡🤬🆘🚧💩" * 40,
    "emoji_sequences": "👨‍👩‍👧‍👦🏳️‍🌈🇨🇳👍🏽" * 10,
    "mixed_scripts": "مرحبا 香港中路 שלום hello 路灯不亮 \u202eRTL override\u202c 한국어 Ελληνικά",
    "zero_width": "路\u200b灯\u200c不\u200d亮\u2060\ufeff",
    "only_zero_width": "\u200b\u200c\u200d\u2060\ufeff" * 20,
    "combining": "路灯" + "\u0301" * 3000,
    "lone_surrogate": "路灯\ud800不亮\udfff",
    "nul_and_controls": "路灯\x00不亮\x01\x7f\x9f",
    "injection": INJECTION,
    "injection_quotes": "\\'; SELECT * FROM system.users; -- \\\\ \" ` $1 %s {0}",
    "html": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "newlines": "\r\n" * 2000 + "路灯不亮",
}
IDS = list(HOSTILE)


# --- processors.pii -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", IDS)
def test_pii_spans_are_sane_on_hostile_text(name: str) -> None:
    text = HOSTILE[name]
    spans = find_pii(text)
    at = 0
    for span in spans:
        assert span.type in PII_TYPES
        assert at <= span.start < span.end <= len(text)  # in order, not overlapping
        at = span.end
    masked = mask(text)
    assert masked.spans == spans
    if not spans:
        assert masked.text == text  # untouched, byte for byte


def test_injection_text_is_kept_verbatim_and_only_the_pii_masked() -> None:
    assert mask(INJECTION).text == INJECTION
    text = f"{INJECTION} 电话13800001234 \u202eمرحبا😡 邮箱 a'b@example.com"
    out = mask(text).text
    assert out.startswith(INJECTION)
    assert "13800001234" not in out and "[手机号]" in out
    assert "مرحبا😡" in out


def test_pii_inside_a_very_long_text_is_still_found() -> None:
    text = LONG_CJK + "联系电话13800001234" + "😡" * 1000
    out = mask(text)
    assert [s.type for s in out.spans] == ["phone"]
    assert "13800001234" not in out.text and out.text.startswith(LONG_CJK)


# --- processors.content_screen --------------------------------------------------------------------
@pytest.mark.parametrize("name", IDS)
def test_screen_gives_a_score_and_known_flags(name: str) -> None:
    result = screen(HOSTILE[name])
    assert 0.0 <= result.score <= 1.0
    assert set(result.flags) <= set(CATEGORIES)


def test_abuse_hidden_in_long_or_mixed_text_is_still_flagged() -> None:
    for text in (LONG_CJK + "你们这帮狗官", "😡😡狗官😡", f"مرحبا {INJECTION} 狗官 hello"):
        assert "abuse" in screen(text).flags


# --- processors.appeal_analysis ------------------------------------------------------------------
@pytest.mark.parametrize("name", IDS)
@pytest.mark.parametrize(
    ("channel", "code"), [(None, None), ("app", "E02"), ("'; DROP", "Z99"), ("\x00", "")]
)
def test_analysis_is_sane_on_hostile_text(
    domain: Domain, name: str, channel: str | None, code: str | None
) -> None:
    result = analyse(HOSTILE[name], channel, code, domain)
    assert result.urgency in {t.urgency for t in domain.event_types.values()} | {"normal"}
    assert result.sentiment in ("negative", "neutral", "positive")
    assert -1.0 <= result.sentiment_score <= 1.0
    assert set(result.flags) <= set(CATEGORIES)


# --- processors.merge -----------------------------------------------------------------------------
T0 = datetime(2025, 11, 5, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy(domain: Domain) -> MergePolicy:
    return MergePolicy.default(domain)


def _decision(text: str, **overrides: Any) -> DispatchDecision:
    fields: dict[str, Any] = dict(
        kind="dispatch_decision", schema_version=1, input_id="a-1",
        input_kind="citizen_appeal", channel="app", text=text, code="E06",
        event_name="供水问题", urgency="urgent", route="U:water", district="市南区",
        street=None, road=None, place=None, confidence=0.9, auto=True, backend="test",
        received_at=T0.isoformat(), decided_at=(T0 + timedelta(seconds=1)).isoformat(),
    )  # fmt: skip
    fields.update(overrides)
    return DispatchDecision(**fields)


@pytest.mark.parametrize("name", IDS)
def test_merge_takes_hostile_decisions(policy: MergePolicy, name: str) -> None:
    text = HOSTILE[name]
    decision = _decision(text, road=text[:200] or None, place=text[:200] or None)
    report = report_from_decision(decision)
    assert report.text == text
    signature = place_signature(report, policy)
    assert signature is not None
    index = CaseIndex(policy)
    first = index.step(report, CaseState())
    # The state survives the JSON round trip a Faust table makes of it.
    state = CaseState.from_json(json.loads(json.dumps(first.state.to_json(), ensure_ascii=False)))
    again = replace(report, report_id="a-2", at=T0 + timedelta(minutes=5))
    second = index.step(again, state)
    assert first.case_id == "a-1"
    assert second.case_id in ("a-1", "a-2")


def test_injection_in_every_place_field_is_only_text(policy: MergePolicy) -> None:
    report = MergeReport(
        report_id="x-1", at=T0, code="E06", district=INJECTION, street=INJECTION,
        road=INJECTION, place=INJECTION, text=INJECTION, channel=INJECTION,
    )  # fmt: skip
    index = CaseIndex(policy)
    step = index.step(report, CaseState())
    assert step.case_id == "x-1"
    assert json.loads(json.dumps(step.state.to_json()))  # plain JSON, nothing executable
    assert index.key(report) is not None


# --- processors.similar ---------------------------------------------------------------------------
_STRING_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _literals(sql: str) -> list[str]:
    """The string literals of ``sql`` as ClickHouse reads them (backslash escapes)."""
    return [re.sub(r"\\(.)", r"\1", m.group(1)) for m in _STRING_LITERAL.finditer(sql)]


@pytest.mark.parametrize(
    "value",
    [
        "'; DROP TABLE x; --",
        "市南区' OR '1'='1",
        "\\",
        "a\\'; DROP TABLE x; --",
        "\\\\'",
        "😡 مرحبا 市南区",
        "-- comment",
        "/* */ UNION SELECT 1",
    ],
)
def test_similar_sql_quotes_injection_looking_filters(value: str) -> None:
    filters = SearchFilters(district=value, exclude_case_id=value)
    sql = similar_sql(np.ones(64, dtype=np.float32) / 8, filters, 5)
    # Outside the literals only our own SQL is left: the value is inside them, intact.
    outside = _STRING_LITERAL.sub("''", sql)
    assert "DROP" not in outside and "UNION" not in outside and "--" not in outside
    assert _literals(where_clause(filters, 64)) == [value, value]
    assert outside.endswith("ORDER BY score DESC, case_id ASC LIMIT 5")


@pytest.mark.parametrize(
    "filters",
    [
        {"code": "'; DROP TABLE x; --"},
        {"code": "E01'"},
        {"code": "E01\n"},
        {"code": ""},
        {"district": "市南区\x00"},
        {"district": "市南区\n; DROP TABLE x"},
        {"district": "\r"},
        {"district": ""},
        {"exclude_case_id": "a\x00b"},
        {"exclude_case_id": "a\nb"},
        {"exclude_case_id": "\x7f"},
    ],
)
def test_search_filters_refuse_control_characters_and_bad_codes(filters: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        SearchFilters(**filters)


@pytest.mark.parametrize(
    ("table", "k"),
    [("case_embeddings; DROP TABLE x", 5), ("x' OR 1", 5), ("`x`", 5), ("case_embeddings\n", 5),
     ("case_embeddings", 0),
     ("case_embeddings", 10**9), ("case_embeddings", True)],
)  # fmt: skip
def test_similar_sql_refuses_bad_tables_and_k(table: str, k: Any) -> None:
    with pytest.raises(ValueError):
        similar_sql(np.ones(64, dtype=np.float32), SearchFilters(), k, table)


@pytest.mark.parametrize(
    "vector", [np.full(64, np.nan), np.full(64, np.inf), np.ones(63), np.ones((2, 64))]
)
def test_similar_sql_refuses_bad_vectors(vector: np.ndarray) -> None:
    with pytest.raises(ValueError):
        similar_sql(vector, SearchFilters(), 5)


# --- processors.report ----------------------------------------------------------------------------
END = date(2026, 11, 20)
REPORTED = [
    INJECTION,
    "😡🤬🆘" * 10,
    HOSTILE["mixed_scripts"],
    LONG_CJK,
    "你们这群狗官，全是废物",  # abusive: withheld
    HOSTILE["html"],
    HOSTILE["injection_quotes"],
]


class HostileWarehouse:
    """Answers the report's queries with notable cases carrying hostile text."""

    def __init__(self) -> None:
        queries = report_queries(ReportPeriod.ending("day", END))
        self.names = {sql: name for name, sql in queries.items()}

    def query(self, sql: str, settings: Any = None) -> QueryResult:
        name = self.names[sql]
        if name == "totals":
            columns = panel("totals").columns
            row = (len(REPORTED), 1, 1 / len(REPORTED), 0, 0, None, 0, 0, None)
            return QueryResult(list(columns), ["Float64"] * len(columns), [row])
        if name == "notable_cases":
            rows = [
                ("critical", f"c{i}", "2026-11-20 01:00:00", "2026-11-20 01:30:00", "critical",
                 "K01", "燃气泄漏", "燃气公司", "市南区", text[:20], text[:40], "app", text,
                 0.4, 0, 0, 0, 0)
                for i, text in enumerate(REPORTED)
            ]  # fmt: skip
            return QueryResult(list(CASE_COLUMNS), ["String"] * len(CASE_COLUMNS), rows)
        if name == "notable_counts":
            return QueryResult(list(CASE_COUNT_COLUMNS), ["UInt64"] * 4, [(len(REPORTED), 0, 0, 0)])
        return QueryResult([], [], [])


def test_a_report_on_hostile_texts_screens_escapes_and_writes(tmp_path: Path) -> None:
    files = generate_report(HostileWarehouse(), "day", END, screen, tmp_path, pdf=True)
    page = files.html_path.read_text("utf-8")
    assert files.withheld >= 1
    assert "狗官" not in page and "废物" not in page  # screened out
    assert "<script>" not in page and "<img src=x" not in page  # escaped
    assert "&#x27;; DROP TABLE citizen_appeals_log; --" in page  # shown, as text
    assert "😡🤬🆘" in page
    assert LONG_CJK not in page  # an excerpt, not 100 kB of one report
    assert len(page) < 2_000_000
    if files.pdf_path is not None:  # glyphs the CJK font lacks are dropped, not fatal
        assert files.pdf_path.read_bytes().startswith(b"%PDF-")


# --- processors.ingest ----------------------------------------------------------------------------
NOW = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)


def _appeal(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "citizen_appeal",
        "schema_version": 1,
        "appeal_id": "h-1",
        "channel": "app",
        "received_at": "2026-11-26T08:29:00+08:00",
        "text": "路灯不亮",
    }
    rec.update(overrides)
    return rec


def _event(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "city_event",
        "schema_version": 1,
        "event_id": "e-1",
        "source": "grid_inspector",
        "reported_at": "2026-11-26T08:30:00+08:00",
        "description": "路灯不亮",
    }
    rec.update(overrides)
    return rec


def _ingest(ctx: IngestContext, value: bytes, topic: str = "citizen.appeals") -> Any:
    return ingest(SourceMessage(topic, 0, 7, NOW, b"k", value), ctx, NOW)


_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u2060\ufeff]"
)


def _sane_appeal_row(stored: StoredRow, ctx: IngestContext) -> None:
    row = stored.row
    assert stored.table == "citizen_appeals_log"
    assert row["text"] and len(row["text"]) <= ctx.max_text_chars
    assert not _INVISIBLE.search(row["text"])
    assert row["text"].encode("utf-8")  # storable: no lone surrogate
    assert row["urgency"] and row["sentiment"]
    assert 0.0 <= row["screen_score"] <= 1.0
    raw = stored.extra[0]
    assert raw.table == "citizen_appeals_raw_log"


def _letter(out: Any, kind: ErrorKind, *words: str) -> None:
    assert isinstance(out, DeadLetter), out
    assert out.error_kind == kind, out.reason
    assert out.reason and all(w in out.reason for w in words), out.reason
    assert out.source_offset == 7 and out.processor == "ingest"


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("name", IDS)
def test_ingest_never_raises_on_hostile_appeal_text(
    ctx: IngestContext, name: str, ensure_ascii: bool
) -> None:
    text = HOSTILE[name]
    value = json.dumps(_appeal(text=text, address=text[:500]), ensure_ascii=ensure_ascii)
    # A lone surrogate goes out as a JSON escape (ensure_ascii) or as invalid UTF-8.
    raw = value.encode("utf-8", "surrogatepass")
    out = _ingest(ctx, raw)
    if isinstance(out, StoredRow):
        _sane_appeal_row(out, ctx)
    else:
        assert isinstance(out, DeadLetter)
        assert out.error_kind in {
            ErrorKind.OVERSIZE, ErrorKind.INVALID_FIELD, ErrorKind.MALFORMED_JSON,
            ErrorKind.UNDECODABLE,
        }  # fmt: skip
        assert out.reason and out.original == raw


def test_ingest_outcomes_of_each_hostile_kind(ctx: IngestContext) -> None:
    def appeal(text: str, ensure_ascii: bool = False) -> Any:
        raw = json.dumps(_appeal(text=text), ensure_ascii=ensure_ascii)
        return _ingest(ctx, raw.encode("utf-8", "surrogatepass"))

    # 100 kB: too big for the message limit (UTF-8) or for the text limit (ASCII).
    _letter(appeal(LONG_CJK), ErrorKind.OVERSIZE, "bytes")
    _letter(appeal("A" * 100_000), ErrorKind.OVERSIZE, "text", "characters")
    _letter(appeal("A" * (ctx.max_text_chars + 1)), ErrorKind.OVERSIZE, "text")
    # Only invisible characters: nothing left to report.
    _letter(appeal(HOSTILE["only_zero_width"]), ErrorKind.INVALID_FIELD, "empty")
    # Lone surrogates, as JSON escapes or as raw (invalid) UTF-8.
    _letter(appeal("路灯\ud800", ensure_ascii=True), ErrorKind.MALFORMED_JSON, "surrogate")
    _letter(appeal("路灯\udfff不亮", ensure_ascii=False), ErrorKind.UNDECODABLE, "UTF-8")
    # A raw NUL inside a JSON string is no JSON; escaped, it is dropped from the text.
    raw_nul = (
        json.dumps(_appeal(text="路灯XX不亮"), ensure_ascii=False).encode().replace(b"XX", b"\x00")
    )
    _letter(_ingest(ctx, raw_nul), ErrorKind.MALFORMED_JSON)
    stored = appeal("路灯\x00不亮\u200b")
    assert isinstance(stored, StoredRow) and stored.row["text"] == "路灯不亮"
    # Emoji only, mixed scripts, injection: stored as written.
    for text in (HOSTILE["only_emoji"], HOSTILE["mixed_scripts"].replace("\u202e", "").replace(
            "\u202c", ""), INJECTION, HOSTILE["injection_quotes"]):  # fmt: skip
        out = appeal(text)
        assert isinstance(out, StoredRow), out
        assert out.row["text"] == " ".join(text.split()), text


@pytest.mark.parametrize(
    ("overrides", "kind", "word"),
    [
        ({"appeal_id": INJECTION}, ErrorKind.INVALID_FIELD, "appeal_id"),
        ({"appeal_id": "a1\n"}, ErrorKind.INVALID_FIELD, "appeal_id"),
        ({"appeal_id": "a\x00"}, ErrorKind.INVALID_FIELD, "appeal_id"),
        ({"channel": INJECTION}, ErrorKind.INVALID_FIELD, "channel"),
        ({"received_at": INJECTION}, ErrorKind.INVALID_FIELD, "received_at"),
        ({"address": "路" * 501}, ErrorKind.INVALID_FIELD, "address"),
        ({"text": ["'; DROP"]}, ErrorKind.INVALID_FIELD, "text"),
    ],
)
def test_injection_in_structured_appeal_fields_is_a_dead_letter(
    ctx: IngestContext, overrides: dict[str, Any], kind: ErrorKind, word: str
) -> None:
    _letter(_ingest(ctx, json.dumps(_appeal(**overrides)).encode()), kind, word)


def test_injection_in_an_appeals_district_is_a_warning_not_a_column(ctx: IngestContext) -> None:
    out = _ingest(ctx, json.dumps(_appeal(district=INJECTION, address=INJECTION)).encode())
    assert isinstance(out, StoredRow)
    assert out.row["district"] == "" and out.row["warnings"] == ["unknown_district"]
    assert out.row["address"] == INJECTION  # free text: kept verbatim


@pytest.mark.parametrize("name", IDS)
def test_hostile_event_descriptions(ctx: IngestContext, name: str) -> None:
    value = json.dumps(_event(description=HOSTILE[name]), ensure_ascii=False)
    out = _ingest(ctx, value.encode("utf-8", "surrogatepass"), "city.events")
    if isinstance(out, StoredRow):
        assert out.row["description"] and not _INVISIBLE.search(out.row["description"])
    else:
        assert out.error_kind in {
            ErrorKind.OVERSIZE, ErrorKind.INVALID_FIELD, ErrorKind.UNDECODABLE,
        }  # fmt: skip


@pytest.mark.parametrize("field", ["district", "street", "road", "location_type", "code"])
def test_injection_in_structured_event_fields(ctx: IngestContext, field: str) -> None:
    out = _ingest(ctx, json.dumps(_event(**{field: INJECTION})).encode(), "city.events")
    if field in ("street", "road"):  # free names: kept as given, with a warning
        assert isinstance(out, StoredRow)
        assert out.row[field] == INJECTION and f"unknown_{field}" in out.row["warnings"]
    else:
        assert isinstance(out, DeadLetter) and out.reason
        assert out.error_kind in {
            ErrorKind.UNKNOWN_PLACE, ErrorKind.INVALID_FIELD, ErrorKind.UNKNOWN_CODE,
        }  # fmt: skip
