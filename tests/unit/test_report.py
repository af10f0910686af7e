"""The leaders' report without I/O: periods, SQL, numbers, text, screening, HTML, charts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import pytest

from processors import report
from processors.report import (
    CASE_COLUMNS,
    CASE_COUNT_COLUMNS,
    CaseCounts,
    DistrictVolume,
    HotspotCell,
    HourQuality,
    HourVolume,
    NotableCase,
    PeriodData,
    PlaceVolume,
    ReportData,
    ReportPeriod,
    Screener,
    Totals,
    TypeVolume,
    UnitCompliance,
    count_change,
    rate_change,
    render_charts,
    render_html,
    report_data,
    report_queries,
    summary_text,
)
from schemas import dashboard
from streams.clickhouse import QueryResult

GENERATED = datetime(2026, 11, 21, 0, 30, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script>"
INJECTION = "'; DROP TABLE dispatch_decisions; --"
MARK = "违禁词"  # what the fake screen flags


@dataclass(frozen=True)
class Verdict:
    score: float
    flags: tuple[str, ...]


def passing(_text: str) -> Verdict:
    return Verdict(0.0, ())


def flag_marked(text: str) -> Verdict:
    return Verdict(0.9, ("abuse",)) if MARK in text else Verdict(0.0, ())


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- periods -------------------------------------------------------------------------------


def test_a_day_is_a_shanghai_calendar_day():
    p = ReportPeriod.ending("day", date(2026, 1, 1))
    assert (p.first, p.last) == (date(2026, 1, 1), date(2026, 1, 1))
    # Local midnight is 16:00 UTC the day before.
    assert (p.since, p.until) == (_utc(2025, 12, 31, 16), _utc(2026, 1, 1, 16))
    prev = p.previous()
    assert (prev.first, prev.last) == (date(2025, 12, 31), date(2025, 12, 31))
    assert (prev.since, prev.until) == (_utc(2025, 12, 30, 16), _utc(2025, 12, 31, 16))
    assert p.label == "2026年1月1日"
    assert p.previous_name == "前一日"


def test_a_week_across_the_new_year():
    # Thursday 1 January 2026: its ISO week (2026-W01) began on Monday 29 December 2025.
    p = ReportPeriod.ending("week", date(2026, 1, 1))
    assert (p.first, p.last, p.days, p.complete) == (date(2025, 12, 29), date(2026, 1, 1), 4, False)
    assert p.since == _utc(2025, 12, 28, 16)
    assert p.until == _utc(2026, 1, 1, 16)
    assert p.label == "2026年第1周（12月29日—2026年1月1日）"
    # To date: compared with the same four days of the week before.
    prev = p.previous()
    assert (prev.first, prev.last) == (date(2025, 12, 22), date(2025, 12, 25))
    assert p.previous_name == "上周同期"

    whole = ReportPeriod.ending("week", date(2026, 1, 4))
    assert whole.complete and whole.previous_name == "上周"
    assert (whole.previous().first, whole.previous().last) == (
        date(2025, 12, 22),
        date(2025, 12, 28),
    )


@pytest.mark.parametrize(
    ("end", "first", "previous"),
    [
        # A whole month is compared with the whole month before, whatever its length.
        (date(2026, 3, 31), date(2026, 3, 1), (date(2026, 2, 1), date(2026, 2, 28))),
        (date(2024, 3, 31), date(2024, 3, 1), (date(2024, 2, 1), date(2024, 2, 29))),
        (date(2026, 2, 28), date(2026, 2, 1), (date(2026, 1, 1), date(2026, 1, 31))),
        # Month to date: the same days, clipped to the shorter month.
        (date(2026, 3, 30), date(2026, 3, 1), (date(2026, 2, 1), date(2026, 2, 28))),
        (date(2026, 3, 15), date(2026, 3, 1), (date(2026, 2, 1), date(2026, 2, 15))),
        # Across the new year.
        (date(2026, 1, 31), date(2026, 1, 1), (date(2025, 12, 1), date(2025, 12, 31))),
        (date(2026, 1, 15), date(2026, 1, 1), (date(2025, 12, 1), date(2025, 12, 15))),
    ],
)
def test_months(end, first, previous):
    p = ReportPeriod.ending("month", end)
    assert (p.first, p.last) == (first, end)
    assert (p.previous().first, p.previous().last) == previous


def test_month_bounds_in_utc():
    p = ReportPeriod.ending("month", date(2026, 1, 31))
    assert (p.since, p.until) == (_utc(2025, 12, 31, 16), _utc(2026, 1, 31, 16))
    assert p.label == "2026年1月"
    assert p.previous_name == "上月"
    partial = ReportPeriod.ending("month", date(2026, 1, 15))
    assert partial.label == "2026年1月（1日—15日）"
    assert partial.previous_name == "上月同期"
    # Consecutive periods meet exactly: nothing counted twice or lost.
    assert p.previous().until == p.since


def test_bad_periods_are_refused():
    with pytest.raises(ValueError, match="period must be one of"):
        ReportPeriod.ending("year", date(2026, 1, 1))
    with pytest.raises(ValueError, match="starts on its first day"):
        ReportPeriod("week", date(2026, 1, 1), date(2026, 1, 2))  # a Thursday
    with pytest.raises(ValueError, match="not within"):
        ReportPeriod("month", date(2026, 1, 1), date(2026, 2, 1))


def test_default_end_and_what_a_daily_run_writes():
    # 15:59 UTC on 28 Feb is 23:59 in Qingdao: the last whole day is the 27th.
    assert report.default_end(_utc(2026, 2, 28, 15, 59)) == date(2026, 2, 27)
    # 16:30 UTC on 28 Feb is 00:30 on Sunday 1 March: February is over.
    assert report.reports_due(_utc(2026, 2, 28, 16, 30)) == (
        ("day", date(2026, 2, 28)),
        ("month", date(2026, 2, 28)),
    )
    # 00:30 on Monday 1 June: the day, the week and the month.
    assert report.reports_due(_utc(2026, 5, 31, 16, 30)) == (
        ("day", date(2026, 5, 31)),
        ("week", date(2026, 5, 31)),
        ("month", date(2026, 5, 31)),
    )
    assert report.reports_due(_utc(2026, 6, 2, 16, 30)) == (("day", date(2026, 6, 2)),)


# --- queries -------------------------------------------------------------------------------


def test_queries_cover_both_periods_with_the_dashboard_panels():
    p = ReportPeriod.ending("day", date(2026, 1, 1))
    queries = report_queries(p)
    for panel in dashboard.PANELS:
        assert queries[panel.name] == panel.sql(p.since, p.until)
        prev = p.previous()
        assert queries["previous_" + panel.name] == panel.sql(prev.since, prev.until)
    cases = queries["notable_cases"]
    # The log is read only within the period (its partitions are by the month received).
    assert "received_at >= toDateTime('2025-12-31 16:00:00', 'UTC')" in cases
    assert "received_at < toDateTime('2026-01-01 16:00:00', 'UTC')" in cases
    assert cases.count("UNION ALL") == len(report.CASE_KINDS) - 1
    # 18.16: one JOIN at most per SELECT, no WITH, no window functions.
    for sql in (cases, queries["notable_counts"]):
        assert "WITH " not in sql and " OVER " not in sql
        for select in sql.split("SELECT")[1:]:
            assert select.count("JOIN") <= 1


# --- typed results -------------------------------------------------------------------------


def _result(columns, rows):
    return QueryResult(list(columns), ["String"] * len(columns), [tuple(r) for r in rows])


def _empty_results():
    results = {}
    for name in report_queries(ReportPeriod.ending("day", date(2026, 1, 1))):
        results[name] = QueryResult([], [], [])  # what chDB answers for no rows
    return results


def test_report_data_reads_both_engines_shapes():
    p = ReportPeriod.ending("day", date(2026, 11, 20))
    results = _empty_results()
    results["totals"] = _result(
        dashboard.panel("totals").columns, [(10, 7, 0.7, 4, 3, 0.75, 5, 4, 0.8)]
    )
    results["previous_totals"] = _result(
        dashboard.panel("totals").columns, [(0, 0, 0.0, 0, 0, None, 0, 0, None)]
    )
    # chDB gives DateTime as text, the server driver as naive datetimes: both UTC.
    results["volume_by_hour"] = _result(
        ("hour", "channel", "reports"),
        [("2026-11-19 16:00:00", "app", 2), (datetime(2026, 11, 19, 17), "wechat", 3)],
    )
    results["notable_cases"] = _result(
        CASE_COLUMNS,
        [
            (
                "overdue", "r1", "2026-11-20 01:00:00", "2026-11-20 01:30:00", "critical",
                "K01", "燃气泄漏", "燃气公司", "市南区", "八大关街道", "汇泉广场",
                "hotline_12345", "闻到煤气味", 0.4000000059604645, 0, 95, 1, 0,
            ),
        ],
    )  # fmt: skip
    results["notable_counts"] = _result(CASE_COUNT_COLUMNS, [(1, 1, 0, 0)])
    data = report_data(p, results, {"K": "突发事件"})
    assert data.current.totals == Totals(10, 7, 0.7, 4, 3, 0.75, 5, 4, 0.8)
    assert data.previous.totals.auto_accuracy is None
    assert [h.hour for h in data.current.by_hour] == [
        _utc(2026, 11, 19, 16),
        _utc(2026, 11, 19, 17),
    ]
    case = data.cases[0]
    assert (case.received_at, case.auto, case.late_minutes, case.waiting) == (
        _utc(2026, 11, 20, 1),
        False,
        95,
        True,
    )
    assert data.case_counts == CaseCounts(1, 1, 0, 0)
    assert data.event_classes == {"K": "突发事件"}


def test_report_data_refuses_unexpected_columns():
    results = _empty_results()
    results["volume_by_district"] = _result(("district", "count"), [("市南区", 1)])
    with pytest.raises(ValueError, match="volume_by_district"):
        report_data(ReportPeriod.ending("day", date(2026, 1, 1)), results)


# --- a report's data, built by hand --------------------------------------------------------

DAY = ReportPeriod.ending("day", date(2026, 11, 20))
MIDNIGHT = DAY.since  # 2026-11-19 16:00 UTC


def _case(kind: str, input_id: str, **overrides) -> NotableCase:
    fields = {
        "kind": kind,
        "input_id": input_id,
        "received_at": MIDNIGHT + timedelta(hours=9),
        "respond_by": MIDNIGHT + timedelta(hours=9, minutes=30),
        "urgency": "critical",
        "code": "K01",
        "event_name": "燃气泄漏",
        "unit": "燃气公司",
        "district": "市南区",
        "street": "八大关街道",
        "location": "汇泉广场",
        "channel": "hotline_12345",
        "text": "汇泉广场附近闻到很重的煤气味，请尽快处理",
        "confidence": 0.93,
        "auto": True,
        "late_minutes": 0,
        "waiting": False,
        "place_reports": 0,
    }
    fields.update(overrides)
    return NotableCase(**fields)


def _period(reports: int, auto: int, judged: int, correct: int, due: int, in_time: int,
            *, districts=(), types=(), places=(), units=(), hours=()) -> PeriodData:  # fmt: skip
    return PeriodData(
        totals=Totals(
            reports=reports,
            auto_dispatched=auto,
            auto_rate=auto / reports if reports else 0.0,
            auto_with_feedback=judged,
            auto_correct=correct,
            auto_accuracy=correct / judged if judged else None,
            due=due,
            in_time=in_time,
            compliance=in_time / due if due else None,
        ),
        by_hour=tuple(hours),
        by_type=tuple(TypeVolume(c, n, r) for c, n, r in types),
        by_district=tuple(DistrictVolume(d, r) for d, r in districts),
        hotspots=tuple(HotspotCell(d, "A", r) for d, r in districts),
        quality=tuple(
            HourQuality(h.hour, h.reports, h.reports // 2, h.reports // 4, h.reports // 4)
            for h in hours
        ),
        compliance=tuple(UnitCompliance(u, d, t, t / d) for u, d, t in units),
        places=tuple(PlaceVolume(*p) for p in places),
    )


def _data(**overrides) -> ReportData:
    hours = [HourVolume(MIDNIGHT + timedelta(hours=h), "hotline_12345", 40 + h) for h in range(24)]
    current = _period(
        1100, 770, 200, 190, 1000, 900,
        districts=[("市南区", 400), ("崂山区", 300), ("黄岛区", 250), ("", 150)],
        types=[("A01", "暴露垃圾", 500), ("K01", "燃气泄漏", 20), ("", "", 30)],
        places=[("市南区", "八大关街道", "汇泉广场", 12, "A01")],
        units=[("燃气公司", 20, 15), ("环境卫生服务中心", 500, 490)],
        hours=hours,
    )  # fmt: skip
    previous = _period(
        1000, 650, 180, 171, 950, 855,
        districts=[("市南区", 380), ("崂山区", 320)],
        types=[("A01", "暴露垃圾", 450)],
        places=[("市南区", "八大关街道", "汇泉广场", 9, "A01")],
        units=[("燃气公司", 10, 10)],
        hours=[dataclasses.replace(h, hour=h.hour - timedelta(days=1)) for h in hours],
    )  # fmt: skip
    fields = {
        "period": DAY,
        "current": current,
        "previous": previous,
        "cases": (
            _case("critical", "c1"),
            _case("overdue", "o1", auto=False, late_minutes=135, urgency="urgent"),
            _case("overdue", "o2", auto=False, late_minutes=26 * 60 + 5, waiting=True),
        ),
        "case_counts": CaseCounts(critical=3, overdue=7, low_confidence=0, repeat_places=1),
        "event_classes": {"A": "市容环境", "K": "突发事件"},
    }
    fields.update(overrides)
    return ReportData(**fields)


# --- numbers as text -----------------------------------------------------------------------


def test_summary_gives_the_key_numbers_and_their_change():
    text = summary_text(_data())
    assert text.startswith("2026年11月20日，全市共受理群众诉求和城市管理事件1,100件")
    assert "较前一日增加10.0%（多100件）" in text
    # 70.0% against 65.0%.
    assert "自动派遣770件，自动派遣率70.0%（较前一日上升5.0个百分点）" in text
    # 95.0% against 95.0%.
    assert "经人工核验的200件中准确率95.0%（与前一日持平）" in text
    # 90.0% against 90.0%.
    assert "按时派遣率90.0%（与前一日持平）" in text
    assert "受理量最多的是市南区（400件）" in text
    assert "最多的事件类型为“暴露垃圾”（500件）" in text
    assert "特急事件3件，超时派遣或超时待派7件" in text
    assert "地点1处" in text


def test_change_phrases():
    assert count_change(900, 1000, "上周") == "较上周减少10.0%（少100件）"
    assert count_change(1000, 1000, "上周") == "与上周持平"
    assert count_change(5, 0, "上周") == "上周无记录"
    assert count_change(0, 0, "上周") == "与上周相同"
    assert count_change(1, 3, "前一日") == "较前一日减少66.7%（少2件）"
    assert rate_change(0.612, 0.65, "上月") == "较上月下降3.8个百分点"
    assert rate_change(0.65004, 0.65, "上月") == "与上月持平"
    assert rate_change(None, 0.65, "上月") == ""
    assert report.count_change_cell(110, 100) == "+10.0%"
    assert report.count_change_cell(3, 0) == "新增"
    assert report.rate_change_cell(0.9, 0.95) == "-5.0个百分点"


def test_summary_without_accuracy_or_deadlines():
    data = _data(current=_period(10, 0, 0, 0, 0, 0), previous=_period(0, 0, 0, 0, 0, 0))
    text = summary_text(data)
    assert "前一日无记录" in text
    assert "自动派遣率0.0%；" in text  # no change phrase against a period without reports
    assert "暂无人工核验结果" in text
    assert "本期无到期应派遣的事项" in text


# --- HTML ----------------------------------------------------------------------------------


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def _tags(document: str) -> list[str]:
    parser = _Elements()
    parser.feed(document)
    parser.close()
    return parser.tags


def test_hostile_text_is_escaped_everywhere():
    data = _data(
        current=_period(
            5,
            1,
            0,
            0,
            1,
            1,
            districts=[(HOSTILE, 5)],
            types=[("A01", INJECTION, 5)],
            places=[(HOSTILE, INJECTION, '"><img src=x onerror=alert(1)>', 5, "A01")],
            units=[(HOSTILE, 1, 1)],
        ),  # fmt: skip
        cases=(_case("critical", "c1", text=f"{HOSTILE} {INJECTION}", location=HOSTILE),),
    )
    rendered = render_html(data, {}, passing, GENERATED)
    page = rendered.html
    assert "script" not in _tags(page) and "img" not in _tags(page)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&#x27;; DROP TABLE dispatch_decisions; --" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert rendered.withheld == 0


def test_flagged_text_is_withheld_and_counted():
    data = _data(
        cases=(
            _case("critical", "c1", text=f"有人在汇泉广场{MARK}"),
            _case("critical", "c2", text="井盖丢失，行人易跌落"),
        ),
    )
    seen: list[str] = []

    def screen(text: str) -> Verdict:
        seen.append(text)
        return flag_marked(text)

    rendered = render_html(data, {}, screen, GENERATED)
    assert MARK not in rendered.html
    assert "井盖丢失" in rendered.html
    assert rendered.withheld == 1
    assert rendered.html.count(report.WITHHELD_NOTE) == 1
    assert "本报告共有1项内容因未通过内容审查而隐去" in rendered.html
    assert '<meta name="report-withheld" content="1">' in rendered.html
    # The summary and every case were screened before being written.
    assert rendered.summary in seen
    assert any("井盖丢失" in t for t in seen)


def test_a_flagged_summary_is_withheld_and_a_high_score_withholds_too():
    data = _data(current=_period(3, 0, 0, 0, 0, 0, districts=[(f"{MARK}区", 3)]))
    rendered = render_html(data, {}, flag_marked, GENERATED)
    assert rendered.summary == ""
    assert MARK not in rendered.html
    # The summary and the district's row.
    assert rendered.withheld == 2

    def scores_high(text: str) -> Verdict:
        return Verdict(0.8, ()) if "井盖" in text else Verdict(0.1, ())

    screened = render_html(
        _data(cases=(_case("critical", "c1", text="井盖丢失"),)), {}, scores_high, GENERATED
    )
    assert screened.withheld == 1 and "井盖丢失" not in screened.html


def test_a_failing_screen_stops_the_report():
    def broken(_text: str) -> Verdict:
        raise RuntimeError("screen unavailable")

    with pytest.raises(RuntimeError, match="screen unavailable"):
        render_html(_data(), {}, broken, GENERATED)


def test_screener_asks_once_per_text():
    calls: list[str] = []

    def screen(text: str) -> Verdict:
        calls.append(text)
        return Verdict(0.0, ())

    s = Screener(screen)
    assert s.passes("市南区", "市南区", "崂山区", "")
    assert s.passes("市南区")
    assert calls == ["市南区", "崂山区"]
    assert report.as_screener(s) is s


def test_empty_data_gives_a_valid_report_that_says_so():
    empty = ReportData(DAY, PeriodData(), PeriodData())
    assert render_charts(empty) == {}
    rendered = render_html(empty, {}, passing, GENERATED)
    page = rendered.html
    assert page.startswith("<!DOCTYPE html>")
    assert "2026年11月20日，全市未收到群众诉求或城市管理事件记录，本期无数据可报告。" in page
    assert "本期无数据。" in page
    assert rendered.withheld == 0
    tags = _tags(page)
    assert tags.count("html") == 1 and tags.count("body") == 1
    assert "img" not in tags
    assert page.rstrip().endswith("</html>")


def test_no_data_this_period_mentions_the_previous_one():
    data = ReportData(DAY, PeriodData(), _period(12, 0, 0, 0, 0, 0))
    assert "（前一日为12件）" in summary_text(data)


def test_the_report_has_its_sections_and_numbers():
    data = _data()
    page = render_html(data, {"trend": b"\x89PNG-fake"}, passing, GENERATED).html
    for title in ("一、总体情况", "二、事件类型", "三、区域分布", "四、高发地点", "五、派遣质量",
                  "六、重点关注", "附注"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page
    assert 'src="data:image/png;base64,iVBORy1mYWtl"' in page
    assert "生成于 2026年11月21日 08:30（北京时间）" in page
    assert "超时2小时15分派出" in page
    assert "仍待派遣，已超时1天2小时" in page
    assert "特急事件：共3件，列出1件。" in page
    # Unknown district and the no-model code get readable names.
    assert "（未识别区域）" in page and "（模型未作答）" in page
    # Units furthest behind first.
    assert page.index("燃气公司") < page.index("环境卫生服务中心")


def test_without_charts_the_report_says_why():
    page = render_html(_data(), {}, passing, GENERATED).html
    assert "本期报告未附图表" in page


# --- charts and PDF ------------------------------------------------------------------------


def test_trend_buckets_are_local_hours_and_days():
    rows = [
        HourVolume(_utc(2026, 11, 19, 16), "app", 2),  # 00:00 in Qingdao
        HourVolume(_utc(2026, 11, 20, 15), "app", 3),  # 23:00
        HourVolume(_utc(2026, 11, 20, 16), "app", 9),  # the next day: not in the day
    ]
    assert report.trend_series(DAY, rows)["app"][0] == 2
    assert report.trend_series(DAY, rows)["app"][23] == 3
    week = ReportPeriod.ending("week", date(2026, 11, 22))  # Monday 16th .. Sunday 22nd
    series = report.trend_series(week, rows)["app"]
    assert series == [0, 0, 0, 0, 5, 9, 0]  # Friday 20th, Saturday 21st


def test_quality_series_divides_only_what_it_can():
    rows = [
        HourQuality(_utc(2026, 11, 19, 16), 4, 3, 2, 1),
        HourQuality(_utc(2026, 11, 19, 17), 2, 1, 0, 0),
    ]
    rate, accuracy = report.quality_series(DAY, rows)
    assert rate[:3] == [0.75, 0.5, None]
    assert accuracy[:2] == [0.5, None]


def test_no_cjk_font_no_charts():
    assert render_charts(_data(), font=None) == {}


def test_charts_are_pngs_with_screened_labels():
    font = report.find_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (fonts-noto-cjk)")
    asked: list[str] = []

    def screen(text: str) -> Verdict:
        asked.append(text)
        return Verdict(0.0, ())

    charts = render_charts(_data(), screen=screen, font=font)
    assert set(charts) == {"trend", "types", "districts", "hotspots", "quality", "compliance"}
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in charts.values())
    assert {"市南区", "A01 暴露垃圾", "燃气公司", "市容环境"} <= set(asked)


def test_pdf_from_the_same_document():
    font = report.find_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (fonts-noto-cjk)")
    rendered = render_html(_data(), {}, flag_marked, GENERATED)
    pdf = report.render_pdf(rendered.document, {}, font)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


def test_the_notes_name_both_periods():
    week = ReportPeriod.ending("week", date(2026, 1, 1))
    page = render_html(_data(period=week), {}, passing, GENERATED).html
    assert (
        "统计期：2025年12月29日—2026年1月1日（北京时间），对比期：2025年12月22日—12月25日。" in page
    )
    page = render_html(_data(), {}, passing, GENERATED).html
    assert "统计期：2026年11月20日（北京时间），对比期：2026年11月19日。" in page


# --- the glue ------------------------------------------------------------------------------


class EmptyWarehouse:
    """Answers every query with no rows, as chDB does for an empty result."""

    dialect = "modern"
    database = "test"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, sql, settings=None):
        self.queries.append(sql)
        return QueryResult([], [], [])


def test_generate_report_writes_a_valid_empty_report(tmp_path):
    from processors.report_run import generate_report

    wh = EmptyWarehouse()
    files = generate_report(wh, "week", date(2026, 1, 1), passing, tmp_path / "out", pdf=False)
    assert files.html_path == tmp_path / "out" / "report-week-2026-01-01.html"
    assert files.pdf_path is None and files.withheld == 0
    page = files.html_path.read_text("utf-8")
    assert "本期无数据可报告" in page and files.summary in page
    assert len(wh.queries) == len(report_queries(ReportPeriod.ending("week", date(2026, 1, 1))))
    assert oct(files.html_path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report-week-2026-01-01.html"]


def test_due_reports_are_written_once_after_midnight_has_settled(tmp_path):
    from processors.report_run import generate_due_reports

    wh = EmptyWarehouse()
    # 00:10 on Monday 1 June in Qingdao: too early for Sunday's reports.
    early = _utc(2026, 5, 31, 16, 10)
    assert [
        f.html_path.name for f in generate_due_reports(wh, early, passing, tmp_path, pdf=False)
    ] == ["report-day-2026-05-30.html"]
    at = _utc(2026, 5, 31, 16, 45)  # 00:45
    names = [f.html_path.name for f in generate_due_reports(wh, at, passing, tmp_path, pdf=False)]
    assert names == [
        "report-day-2026-05-31.html",
        "report-week-2026-05-31.html",
        "report-month-2026-05-31.html",
    ]
    assert generate_due_reports(wh, at + timedelta(minutes=5), passing, tmp_path, pdf=False) == []


def test_a_cut_result_stops_the_report():
    from processors.report_run import fetch_report_data

    class Cut(EmptyWarehouse):
        def query(self, sql, settings=None):
            return QueryResult(["x"], ["UInt8"], [(1,)], truncated=True)

    with pytest.raises(RuntimeError, match="row limit"):
        fetch_report_data(Cut(), DAY)
