"""The city leaders' report (日报 / 周报 / 月报): periods, queries, numbers, text, HTML,
charts and PDF.

Pure: ``report_queries`` gives SQL, ``report_data`` turns the results into typed numbers,
``compose`` writes the (screened) document, ``render_html`` / ``render_pdf`` /
``render_charts`` turn it into bytes. ``processors.report_run`` runs the queries and
writes the files.

Periods are Asia/Shanghai calendar days, weeks (Monday first) and months. A report for an
``end`` date covers its calendar period up to and including that day, so a week report
ending on a Wednesday is "this week to date"; it is compared with the same span of the
previous period (a complete period with the whole previous one).

The numbers come from ``schemas.dashboard``'s panels (the same SQL as the city dashboard,
over the hourly aggregate tables), run for the period and the previous one, and from two
queries of our own over the decision log (notable cases and their counts). Everything
keeps to what ClickHouse 18.16 understands (see ``schemas.dashboard``).

Content screen: every piece of text built from data (the summary, every paragraph with
numbers or names, every table row, every notable case, every chart label) goes through
``screen`` before it is written; an item with any flag (or a score at or above the
threshold) is withheld with a note and counted. Fixed headings, column names and the
notes themselves are literals of this module and are not screened. A screen that raises
stops the report: nothing unscreened is ever written. The HTML and the PDF are rendered
from one screened ``ReportDocument``.

Charts: matplotlib figures without pyplot (Agg), labels in the first CJK font the font
manager knows (``CJK_FAMILIES``); without one, no charts rather than empty boxes. The PDF:
fpdf2 with the same font embedded as a subset (OpenType collections and CFF outlines, as
Debian's fonts-noto-cjk ships them, work). ``rc_context`` changes matplotlib's global
settings while charts are drawn: render one report at a time per process.
"""

from __future__ import annotations

import base64
import calendar
import functools
import html
import io
import math
import string
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from schemas import dashboard
from schemas.dashboard import sql_datetime
from streams.clickhouse import QueryResult
from web.views import CHANNEL_LABELS, to_utc

PeriodKind = Literal["day", "week", "month"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("day", "week", "month")
LOCAL = ZoneInfo("Asia/Shanghai")
TEMPLATE = Path(__file__).resolve().parent / "report_template.html"

# Notable cases: up to this many of each kind are listed (all are counted).
CASE_LIMIT = 10
# A review the model was this unsure about is notable (calibrated probability).
LOW_CONFIDENCE = 0.5
# A place reported at least this many times in the period is a recurring place.
REPEAT_MIN = 3
EXCERPT_CHARS = 60
TABLE_ROWS = 15  # longest tables (types, units) show this many rows

WITHHELD_NOTE = "（此项内容未通过内容审查，已隐去）"


# --- periods -------------------------------------------------------------------------------


def _local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=LOCAL).astimezone(UTC)


def _period_start(kind: PeriodKind, day: date) -> date:
    if kind == "day":
        return day
    if kind == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _period_last(kind: PeriodKind, start: date) -> date:
    if kind == "day":
        return start
    if kind == "week":
        return start + timedelta(days=6)
    return start.replace(day=calendar.monthrange(start.year, start.month)[1])


def period_kind(value: str) -> PeriodKind:
    for kind in PERIOD_KINDS:
        if value == kind:
            return kind
    raise ValueError(f"period must be one of {', '.join(PERIOD_KINDS)}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    """Local days ``first`` .. ``last`` (inclusive) of one calendar day, week or month."""

    kind: PeriodKind
    first: date
    last: date

    def __post_init__(self) -> None:
        if _period_start(self.kind, self.first) != self.first:
            raise ValueError(f"a {self.kind} starts on its first day, not {self.first}")
        if not self.first <= self.last <= _period_last(self.kind, self.first):
            raise ValueError(f"{self.last} is not within the {self.kind} from {self.first}")

    @classmethod
    def ending(cls, kind: str, end: date) -> ReportPeriod:
        """The calendar period holding ``end``, up to and including it."""
        checked = period_kind(kind)
        return cls(checked, _period_start(checked, end), end)

    @property
    def since(self) -> datetime:
        """The first local midnight, as aware UTC."""
        return _local_midnight(self.first)

    @property
    def until(self) -> datetime:
        """The local midnight after the last day (exclusive), as aware UTC."""
        return _local_midnight(self.last + timedelta(days=1))

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def complete(self) -> bool:
        return self.last == _period_last(self.kind, self.first)

    def previous(self) -> ReportPeriod:
        """The previous calendar period: whole if this one is, else its same span."""
        before = self.first - timedelta(days=1)
        first = _period_start(self.kind, before)
        if self.complete:
            return ReportPeriod(self.kind, first, before)
        return ReportPeriod(self.kind, first, min(first + (self.last - self.first), before))

    @property
    def label(self) -> str:
        """How the report names its period, e.g. 2026年11月20日, 2026年11月."""
        first, last = self.first, self.last
        if self.kind == "day":
            return f"{first.year}年{first.month}月{first.day}日"
        if self.kind == "week":
            year, week, _ = first.isocalendar()
            return f"{year}年第{week}周（{_span(first, last)}）"
        whole = "" if self.complete else f"（{first.day}日—{last.day}日）"
        return f"{first.year}年{first.month}月{whole}"

    @property
    def name(self) -> str:
        return {"day": "日报", "week": "周报", "month": "月报"}[self.kind]

    @property
    def previous_name(self) -> str:
        """How the summary names the period compared with."""
        if self.kind == "day":
            return "前一日"
        word = "上周" if self.kind == "week" else "上月"
        return word if self.complete else f"{word}同期"


def _span(first: date, last: date) -> str:
    end = f"{last.month}月{last.day}日"
    if last.year != first.year:
        end = f"{last.year}年{end}"
    return f"{first.month}月{first.day}日—{end}"


def _dates(period: ReportPeriod) -> str:
    first = f"{period.first.year}年{period.first.month}月{period.first.day}日"
    if period.first == period.last:
        return first
    return f"{period.first.year}年{_span(period.first, period.last)}"


def default_end(now: datetime) -> date:
    """The last whole local day before ``now``: what a report run without a date covers."""
    return now.astimezone(LOCAL).date() - timedelta(days=1)


def reports_due(now: datetime) -> tuple[tuple[PeriodKind, date], ...]:
    """What a daily run just after local midnight should write: yesterday's day report,
    on Mondays last week's, on the 1st last month's."""
    today = now.astimezone(LOCAL).date()
    yesterday = today - timedelta(days=1)
    due: list[tuple[PeriodKind, date]] = [("day", yesterday)]
    if today.weekday() == 0:
        due.append(("week", yesterday))
    if today.day == 1:
        due.append(("month", yesterday))
    return tuple(due)


# --- queries -------------------------------------------------------------------------------

CASE_KINDS = ("critical", "overdue", "low_confidence", "repeat_place")
CASE_COLUMNS = (
    "kind",
    "input_id",
    "received_at",
    "respond_by",
    "urgency",
    "code",
    "event_name",
    "unit",
    "district",
    "street",
    "location",
    "channel",
    "text",
    "confidence",
    "auto",
    "late_minutes",
    "waiting",
    "place_reports",
)
CASE_COUNT_COLUMNS = ("critical", "overdue", "low_confidence", "repeat_places")
PREVIOUS = "previous_"


def _received(since: datetime, until: datetime) -> str:
    return f"received_at >= {sql_datetime(since)} AND received_at < {sql_datetime(until)}"


def _cases_base(since: datetime, until: datetime) -> str:
    """Each report received in the window once (its latest decision), with when its unit
    had it (automatic: the decision; reviewed: the first verdict; waiting: now) and
    whether that was late. Decisions without a deadline (respond_by = received_at) are
    never late, as on the dashboard."""
    window = _received(since, until)
    return f"""
        SELECT
            input_id, received_at, respond_by, urgency, code, event_name, unit, district,
            street, location, channel, text, confidence, auto,
            auto = 0 AND verdicts = 0 AS waiting,
            if(auto = 1, decided_at, if(waiting, now(), first_verdict)) AS handled_at,
            respond_by > received_at AND handled_at > respond_by AS late,
            if(
                late,
                intDiv(toInt64(toUInt32(handled_at)) - toInt64(toUInt32(respond_by)), 60),
                toInt64(0)
            ) AS late_minutes
        FROM
        (
            SELECT
                input_id, received_at, respond_by, decided_at, urgency, code, event_name,
                unit, district, street, if(place != '', place, road) AS location, channel,
                text, confidence, auto
            FROM dispatch_decisions_log FINAL
            WHERE {window}
        ) AS decisions
        ANY LEFT JOIN
        (
            SELECT input_id, count() AS verdicts, min(given_at) AS first_verdict
            FROM dispatch_feedback_log
            WHERE input_id IN
                (SELECT input_id FROM dispatch_decisions_log WHERE {window} AND auto = 0)
            GROUP BY input_id
        ) AS feedback USING input_id"""


def _repeat_places(since: datetime, until: datetime) -> str:
    return f"""
            SELECT district, street, location, count() AS place_reports
            FROM
            (
                SELECT district, street, if(place != '', place, road) AS location
                FROM dispatch_decisions_log FINAL
                WHERE {_received(since, until)}
            )
            WHERE location != ''
            GROUP BY district, street, location
            HAVING place_reports >= {REPEAT_MIN}"""


def notable_cases_sql(since: datetime, until: datetime) -> str:
    """Up to CASE_LIMIT reports of each kind (CASE_KINDS), columns CASE_COLUMNS: critical
    urgency (earliest first), dispatched late or still waiting past the deadline (latest
    first), reviews the model was unsure of (least sure first), and one report (the
    latest) at each recurring place (most reported first)."""
    picked = ", ".join(CASE_COLUMNS[1:-1])
    base = _cases_base(since, until)

    def branch(kind: str, where: str, order: str) -> str:
        return f"""
    SELECT * FROM
    (
        SELECT '{kind}' AS kind, {picked}, toUInt64(0) AS place_reports
        FROM ({base})
        WHERE {where}
        ORDER BY {order}
        LIMIT {CASE_LIMIT}
    )"""

    places = f"""
    SELECT * FROM
    (
        SELECT 'repeat_place' AS kind, {picked}, place_reports
        FROM ({base}) AS cases
        ANY INNER JOIN ({_repeat_places(since, until)}) AS places
        USING (district, street, location)
        ORDER BY place_reports DESC, district, street, location, received_at DESC, input_id
        LIMIT 1 BY district, street, location
        LIMIT {CASE_LIMIT}
    )"""
    return "\nUNION ALL".join(
        [
            branch("critical", "urgency = 'critical'", "received_at, input_id"),
            branch("overdue", "late = 1", "late_minutes DESC, input_id"),
            branch(
                "low_confidence",
                f"auto = 0 AND confidence < {LOW_CONFIDENCE}",
                "confidence, received_at, input_id",
            ),
            places,
        ]
    )


def notable_counts_sql(since: datetime, until: datetime) -> str:
    """One row, CASE_COUNT_COLUMNS: how many reports of each notable kind (and recurring
    places) the period had. (ifNull: 26.x types a scalar subquery Nullable.)"""
    return f"""
SELECT
    countIf(urgency = 'critical') AS critical,
    countIf(late = 1) AS overdue,
    countIf(auto = 0 AND confidence < {LOW_CONFIDENCE}) AS low_confidence,
    ifNull((SELECT count() FROM ({_repeat_places(since, until)})), 0) AS repeat_places
FROM ({_cases_base(since, until)})"""


def report_queries(period: ReportPeriod) -> dict[str, str]:
    """Every query a report runs, by name: the dashboard's panels for the period and (as
    ``previous_<panel>``) for the previous one, and the notable cases and counts."""
    previous = period.previous()
    queries: dict[str, str] = {}
    for panel in dashboard.PANELS:
        queries[panel.name] = panel.sql(period.since, period.until)
        queries[PREVIOUS + panel.name] = panel.sql(previous.since, previous.until)
    queries["notable_cases"] = notable_cases_sql(period.since, period.until)
    queries["notable_counts"] = notable_counts_sql(period.since, period.until)
    return queries


# --- typed results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    reports: int = 0
    auto_dispatched: int = 0
    auto_rate: float = 0.0
    auto_with_feedback: int = 0
    auto_correct: int = 0
    auto_accuracy: float | None = None  # None: no automatic decision was judged
    due: int = 0
    in_time: int = 0
    compliance: float | None = None  # None: nothing was due


@dataclass(frozen=True, slots=True)
class HourVolume:
    hour: datetime  # aware UTC, the hour received
    channel: str
    reports: int


@dataclass(frozen=True, slots=True)
class TypeVolume:
    code: str
    event_name: str
    reports: int


@dataclass(frozen=True, slots=True)
class DistrictVolume:
    district: str
    reports: int


@dataclass(frozen=True, slots=True)
class HotspotCell:
    district: str
    event_class: str  # the code's letter; '' : no model answered
    reports: int


@dataclass(frozen=True, slots=True)
class HourQuality:
    hour: datetime
    reports: int
    auto_dispatched: int
    auto_with_feedback: int
    auto_correct: int


@dataclass(frozen=True, slots=True)
class UnitCompliance:
    unit: str
    due: int
    in_time: int
    compliance: float


@dataclass(frozen=True, slots=True)
class PlaceVolume:
    district: str
    street: str
    location: str
    reports: int
    top_code: str


@dataclass(frozen=True, slots=True)
class PeriodData:
    """The dashboard's panels for one period."""

    totals: Totals = Totals()
    by_hour: tuple[HourVolume, ...] = ()
    by_type: tuple[TypeVolume, ...] = ()
    by_district: tuple[DistrictVolume, ...] = ()
    hotspots: tuple[HotspotCell, ...] = ()
    quality: tuple[HourQuality, ...] = ()
    compliance: tuple[UnitCompliance, ...] = ()
    places: tuple[PlaceVolume, ...] = ()


@dataclass(frozen=True, slots=True)
class NotableCase:
    kind: str  # one of CASE_KINDS
    input_id: str
    received_at: datetime
    respond_by: datetime
    urgency: str
    code: str
    event_name: str
    unit: str
    district: str
    street: str
    location: str
    channel: str
    text: str
    confidence: float
    auto: bool
    late_minutes: int
    waiting: bool  # a review no dispatcher has given a verdict on yet
    place_reports: int


@dataclass(frozen=True, slots=True)
class CaseCounts:
    critical: int = 0
    overdue: int = 0
    low_confidence: int = 0
    repeat_places: int = 0


@dataclass(frozen=True, slots=True)
class ReportData:
    period: ReportPeriod
    current: PeriodData
    previous: PeriodData
    cases: tuple[NotableCase, ...] = ()
    case_counts: CaseCounts = CaseCounts()
    # Event classes by the code's letter (A: 市容环境...), from the domain file.
    event_classes: Mapping[str, str] = field(default_factory=dict)


def _int(value: Any) -> int:
    return int(value or 0)


def _ratio(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _time(value: Any) -> datetime:
    moment = to_utc(value)
    if moment is None:
        raise ValueError("a report row has no time")
    return moment


def _rows(results: Mapping[str, QueryResult], name: str, columns: Sequence[str]) -> list[dict]:
    result = results[name]
    # An empty chDB answer has no metadata at all; any other must be what we asked for.
    if result.columns and tuple(result.columns) != tuple(columns):
        raise ValueError(f"{name}: expected columns {columns}, got {result.columns}")
    return [dict(zip(columns, row, strict=True)) for row in result.rows]


def _panel_rows(results: Mapping[str, QueryResult], prefix: str, name: str) -> list[dict]:
    return _rows(results, prefix + name, dashboard.panel(name).columns)


def period_data(results: Mapping[str, QueryResult], prefix: str = "") -> PeriodData:
    """One period's panels from their results (``prefix``: '' or PREVIOUS)."""

    def rows(name: str) -> list[dict]:
        return _panel_rows(results, prefix, name)

    totals_rows = rows("totals")
    t = totals_rows[0] if totals_rows else {}
    return PeriodData(
        totals=Totals(
            reports=_int(t.get("reports")),
            auto_dispatched=_int(t.get("auto_dispatched")),
            auto_rate=_ratio(t.get("auto_rate")) or 0.0,
            auto_with_feedback=_int(t.get("auto_with_feedback")),
            auto_correct=_int(t.get("auto_correct")),
            auto_accuracy=_ratio(t.get("auto_accuracy")),
            due=_int(t.get("due")),
            in_time=_int(t.get("in_time")),
            compliance=_ratio(t.get("compliance")),
        ),
        by_hour=tuple(
            HourVolume(_time(r["hour"]), r["channel"], _int(r["reports"]))
            for r in rows("volume_by_hour")
        ),
        by_type=tuple(
            TypeVolume(r["code"], r["event_name"], _int(r["reports"]))
            for r in rows("volume_by_type")
        ),
        by_district=tuple(
            DistrictVolume(r["district"], _int(r["reports"])) for r in rows("volume_by_district")
        ),
        hotspots=tuple(
            HotspotCell(r["district"], r["event_class"], _int(r["reports"]))
            for r in rows("hotspots")
        ),
        quality=tuple(
            HourQuality(
                _time(r["hour"]),
                _int(r["reports"]),
                _int(r["auto_dispatched"]),
                _int(r["auto_with_feedback"]),
                _int(r["auto_correct"]),
            )
            for r in rows("quality_by_hour")
        ),
        compliance=tuple(
            UnitCompliance(
                r["unit"], _int(r["due"]), _int(r["in_time"]), _ratio(r["compliance"]) or 0.0
            )
            for r in rows("compliance_by_unit")
        ),
        places=tuple(
            PlaceVolume(
                r["district"], r["street"], r["location"], _int(r["reports"]), r["top_code"]
            )
            for r in rows("top_places")
        ),
    )


def report_data(
    period: ReportPeriod,
    results: Mapping[str, QueryResult],
    event_classes: Mapping[str, str] | None = None,
) -> ReportData:
    """The report's numbers from the results of ``report_queries(period)``."""
    cases = tuple(
        NotableCase(
            kind=r["kind"],
            input_id=r["input_id"],
            received_at=_time(r["received_at"]),
            respond_by=_time(r["respond_by"]),
            urgency=r["urgency"],
            code=r["code"],
            event_name=r["event_name"],
            unit=r["unit"],
            district=r["district"],
            street=r["street"],
            location=r["location"],
            channel=r["channel"],
            text=r["text"],
            confidence=float(r["confidence"]),
            auto=bool(r["auto"]),
            late_minutes=_int(r["late_minutes"]),
            waiting=bool(r["waiting"]),
            place_reports=_int(r["place_reports"]),
        )
        for r in _rows(results, "notable_cases", CASE_COLUMNS)
    )
    counts = _rows(results, "notable_counts", CASE_COUNT_COLUMNS)
    c = counts[0] if counts else {}
    return ReportData(
        period=period,
        current=period_data(results),
        previous=period_data(results, PREVIOUS),
        cases=tuple(sorted(cases, key=_case_order)),
        case_counts=CaseCounts(*(_int(c.get(k)) for k in CASE_COUNT_COLUMNS)),
        event_classes=dict(event_classes or {}),
    )


def _case_order(case: NotableCase) -> tuple[Any, ...]:
    # The order each branch's SQL used (a UNION ALL does not keep the branches' order).
    kind = CASE_KINDS.index(case.kind) if case.kind in CASE_KINDS else len(CASE_KINDS)
    if case.kind == "overdue":
        key: tuple[Any, ...] = (-case.late_minutes, case.input_id)
    elif case.kind == "low_confidence":
        key = (case.confidence, case.received_at, case.input_id)
    elif case.kind == "repeat_place":
        key = (-case.place_reports, case.district, case.street, case.location)
    else:
        key = (case.received_at, case.input_id)
    return (kind, *key)


# --- content screen ------------------------------------------------------------------------


class ScreenLike(Protocol):
    @property
    def score(self) -> float: ...

    @property
    def flags(self) -> tuple[str, ...]: ...


Screen = Callable[[str], ScreenLike]


class Screener:
    """A screen that asks once per distinct text (a chart and a table name the same
    district) and says whether texts may be written. Withheld: any flag, or a score at or
    above ``threshold`` (content_screen's own threshold for "needs a person's look")."""

    def __init__(self, screen: Screen, threshold: float = 0.5) -> None:
        self._screen = screen
        self.threshold = threshold
        self._seen: dict[str, ScreenLike] = {}

    def __call__(self, text: str) -> ScreenLike:
        if text not in self._seen:
            self._seen[text] = self._screen(text)
        return self._seen[text]

    def withholds(self, text: str) -> bool:
        result = self(text)
        return bool(result.flags) or result.score >= self.threshold

    def passes(self, *texts: str) -> bool:
        return not any(self.withholds(t) for t in texts if t)

    @property
    def flagged(self) -> tuple[str, ...]:
        """Every distinct flag raised so far (for the run's log, not the report)."""
        return tuple(sorted({f for r in self._seen.values() for f in r.flags}))


def as_screener(screen: Screen) -> Screener:
    return screen if isinstance(screen, Screener) else Screener(screen)


# --- numbers as text -----------------------------------------------------------------------


def fmt_int(value: int) -> str:
    return f"{value:,}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def count_change(current: int, previous: int, previous_name: str) -> str:
    """How a count moved, as a clause of the summary."""
    if previous == 0:
        return f"{previous_name}无记录" if current else f"与{previous_name}相同"
    delta = current - previous
    if delta == 0:
        return f"与{previous_name}持平"
    word, more = ("增加", "多") if delta > 0 else ("减少", "少")
    return f"较{previous_name}{word}{abs(delta) / previous * 100:.1f}%（{more}{abs(delta):,}件）"


def rate_change(current: float | None, previous: float | None, previous_name: str) -> str:
    """How a rate moved, in percentage points ('' when either is unknown)."""
    if current is None or previous is None:
        return ""
    points = round((current - previous) * 100, 1)
    if points == 0:
        return f"与{previous_name}持平"
    word = "上升" if points > 0 else "下降"
    return f"较{previous_name}{word}{abs(points):.1f}个百分点"


def count_change_cell(current: int, previous: int) -> str:
    if previous == 0:
        return "新增" if current else "—"
    return f"{(current - previous) / previous * 100:+.1f}%"


def rate_change_cell(current: float | None, previous: float | None) -> str:
    if current is None or previous is None:
        return "—"
    return f"{(current - previous) * 100:+.1f}个百分点"


def district_label(district: str) -> str:
    return district or "（未识别区域）"


def unit_label(unit: str) -> str:
    return unit or "（未定单位）"


def type_label(code: str, event_name: str) -> str:
    return f"{code} {event_name}".strip() if code else "（模型未作答）"


def class_label(letter: str, classes: Mapping[str, str]) -> str:
    if not letter:
        return "未分类"
    return classes.get(letter) or f"{letter}类"


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel or "未知")


def local_time(moment: datetime, with_date: bool = True) -> str:
    local = moment.astimezone(LOCAL)
    return f"{local:%m-%d %H:%M}" if with_date else f"{local:%H:%M}"


def duration(minutes: int) -> str:
    if minutes >= 24 * 60:
        return f"{minutes // (24 * 60)}天{minutes % (24 * 60) // 60}小时"
    if minutes >= 60:
        return f"{minutes // 60}小时{minutes % 60}分"
    return f"{minutes}分钟"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _first(items: Sequence[Any]) -> Any:
    return items[0] if items else None


def summary_text(data: ReportData) -> str:
    """The opening paragraph: the key numbers and how they moved since the previous period."""
    period, cur, prev = data.period, data.current.totals, data.previous.totals
    pname = period.previous_name
    if cur.reports == 0:
        before = f"（{pname}为{fmt_int(prev.reports)}件）" if prev.reports else ""
        return f"{period.label}，全市未收到群众诉求或城市管理事件记录{before}，本期无数据可报告。"
    parts = [
        f"{period.label}，全市共受理群众诉求和城市管理事件{fmt_int(cur.reports)}件，"
        f"{count_change(cur.reports, prev.reports, pname)}。"
    ]
    rate = f"自动派遣{fmt_int(cur.auto_dispatched)}件，自动派遣率{fmt_pct(cur.auto_rate)}"
    moved = rate_change(cur.auto_rate, prev.auto_rate if prev.reports else None, pname)
    quality = [rate + (f"（{moved}）" if moved else "")]
    if cur.auto_accuracy is None:
        quality.append("自动派遣暂无人工核验结果")
    else:
        moved = rate_change(cur.auto_accuracy, prev.auto_accuracy, pname)
        quality.append(
            f"经人工核验的{fmt_int(cur.auto_with_feedback)}件中准确率"
            f"{fmt_pct(cur.auto_accuracy)}" + (f"（{moved}）" if moved else "")
        )
    if cur.compliance is None:
        quality.append("本期无到期应派遣的事项")
    else:
        moved = rate_change(cur.compliance, prev.compliance, pname)
        quality.append(f"按时派遣率{fmt_pct(cur.compliance)}" + (f"（{moved}）" if moved else ""))
    parts.append("；".join(quality) + "。")
    top_district = _first([d for d in data.current.by_district if d.district])
    top_type = _first([t for t in data.current.by_type if t.code])
    leaders = []
    if top_district:
        leaders.append(
            f"受理量最多的是{top_district.district}（{fmt_int(top_district.reports)}件）"
        )
    if top_type:
        leaders.append(f"最多的事件类型为“{top_type.event_name}”（{fmt_int(top_type.reports)}件）")
    if leaders:
        parts.append("，".join(leaders) + "。")
    counts = data.case_counts
    parts.append(
        f"特急事件{fmt_int(counts.critical)}件，超时派遣或超时待派"
        f"{fmt_int(counts.overdue)}件，被反映{REPEAT_MIN}次及以上的地点"
        f"{fmt_int(counts.repeat_places)}处。"
    )
    return "".join(parts)


# --- the document --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Withheld:
    """An item the screen flagged: only this note is written in its place."""

    note: str = WITHHELD_NOTE


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str
    note: bool = False  # a side remark (smaller, grey)


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...] | Withheld, ...]
    numeric: tuple[bool, ...]  # right-aligned columns
    widths: tuple[int, ...] = ()  # relative widths for the PDF ('' : equal)


@dataclass(frozen=True, slots=True)
class Figure:
    chart: str  # a key of render_charts' result
    caption: str


Block = Paragraph | Table | Figure | Withheld


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class ReportDocument:
    title: str
    period_label: str
    generated: str
    summary: Paragraph | Withheld
    sections: tuple[Section, ...]
    withheld: int


@dataclass(frozen=True, slots=True)
class RenderedReport:
    html: str
    withheld: int
    summary: str  # '' when the summary itself was withheld
    document: ReportDocument


class _Writer:
    """Builds blocks, screening every one that carries data and counting what it holds
    back."""

    def __init__(self, screener: Screener) -> None:
        self.screener = screener
        self.withheld = 0

    def para(self, text: str, note: bool = False) -> Paragraph | Withheld:
        if self.screener.passes(text):
            return Paragraph(text, note)
        self.withheld += 1
        return Withheld()

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        numeric: Sequence[bool],
        widths: Sequence[int] = (),
    ) -> Table:
        kept: list[tuple[str, ...] | Withheld] = []
        for row in rows:
            if self.screener.passes(*row):
                kept.append(tuple(row))
            else:
                self.withheld += 1
                kept.append(Withheld())
        return Table(tuple(columns), tuple(kept), tuple(numeric), tuple(widths))


def _by_key(items: Sequence[Any], key: Callable[[Any], Any]) -> dict[Any, Any]:
    return {key(i): i for i in items}


def _overview(data: ReportData, w: _Writer, charts: Collection[str]) -> Section:
    cur, prev = data.current.totals, data.previous.totals
    rows = [
        (
            "受理总量（件）",
            fmt_int(cur.reports),
            fmt_int(prev.reports),
            count_change_cell(cur.reports, prev.reports),
        ),
        (
            "自动派遣（件）",
            fmt_int(cur.auto_dispatched),
            fmt_int(prev.auto_dispatched),
            count_change_cell(cur.auto_dispatched, prev.auto_dispatched),
        ),
        (
            "自动派遣率",
            fmt_pct(cur.auto_rate),
            fmt_pct(prev.auto_rate),
            rate_change_cell(
                cur.auto_rate if cur.reports else None, prev.auto_rate if prev.reports else None
            ),
        ),
        (
            "自动派遣准确率",
            fmt_pct(cur.auto_accuracy),
            fmt_pct(prev.auto_accuracy),
            rate_change_cell(cur.auto_accuracy, prev.auto_accuracy),
        ),
        (
            "应按时派遣（件）",
            fmt_int(cur.due),
            fmt_int(prev.due),
            count_change_cell(cur.due, prev.due),
        ),
        (
            "按时派遣率",
            fmt_pct(cur.compliance),
            fmt_pct(prev.compliance),
            rate_change_cell(cur.compliance, prev.compliance),
        ),
    ]
    blocks: list[Block] = [
        w.table(
            ("指标", "本期", data.period.previous_name, "变化"),
            rows,
            (False, True, True, True),
            (3, 2, 2, 2),
        ),
    ]
    if "trend" in charts:
        blocks.append(Figure("trend", "受理量走势（柱：本期，按渠道；线：对比期）"))
    return Section("一、总体情况", tuple(blocks))


def _types(data: ReportData, w: _Writer, charts: Collection[str]) -> Section:
    before = _by_key(data.previous.by_type, lambda t: (t.code, t.event_name))
    total = data.current.totals.reports
    rows = []
    for t in data.current.by_type[:TABLE_ROWS]:
        old = before.get((t.code, t.event_name))
        previous = old.reports if old else 0
        rows.append(
            (
                type_label(t.code, t.event_name),
                fmt_int(t.reports),
                fmt_pct(t.reports / total if total else None),
                fmt_int(previous),
                count_change_cell(t.reports, previous),
            )
        )
    blocks: list[Block] = []
    if len(data.current.by_type) > TABLE_ROWS:
        blocks.append(
            w.para(f"共{len(data.current.by_type)}类，列出受理量最多的{TABLE_ROWS}类。", note=True)
        )
    blocks.append(
        w.table(
            ("事件类型", "本期", "占比", data.period.previous_name, "变化"),
            rows,
            (False, True, True, True, True),
            (4, 2, 2, 2, 2),
        )
    )
    if "types" in charts:
        blocks.append(Figure("types", "主要事件类型受理量（本期与对比期）"))
    return Section("二、事件类型", tuple(blocks))


def _districts(data: ReportData, w: _Writer, charts: Collection[str]) -> Section:
    before = _by_key(data.previous.by_district, lambda d: d.district)
    total = data.current.totals.reports
    rows = []
    for d in data.current.by_district:
        old = before.get(d.district)
        previous = old.reports if old else 0
        rows.append(
            (
                district_label(d.district),
                fmt_int(d.reports),
                fmt_pct(d.reports / total if total else None),
                fmt_int(previous),
                count_change_cell(d.reports, previous),
            )
        )
    blocks: list[Block] = [
        w.table(
            ("区（市）", "本期", "占比", data.period.previous_name, "变化"),
            rows,
            (False, True, True, True, True),
            (4, 2, 2, 2, 2),
        ),
    ]
    if "districts" in charts:
        blocks.append(Figure("districts", "各区（市）受理量（本期与对比期）"))
    if "hotspots" in charts:
        blocks.append(Figure("hotspots", "各区（市）× 事件大类 受理量"))
    return Section("三、区域分布", tuple(blocks))


def _places(data: ReportData, w: _Writer) -> Section:
    names = {t.code: t.event_name for t in (*data.current.by_type, *data.previous.by_type)}
    before = _by_key(data.previous.places, lambda p: (p.district, p.street, p.location))
    rows = []
    for p in data.current.places:
        old = before.get((p.district, p.street, p.location))
        rows.append(
            (
                district_label(p.district),
                p.street or "—",
                p.location,
                fmt_int(p.reports),
                fmt_int(old.reports) if old else "—",
                type_label(p.top_code, names.get(p.top_code, "")),
            )
        )
    if not rows:
        return Section("四、高发地点", (w.para("本期没有可识别地点的报告。"),))
    intro = w.para(
        f"本期被反映最多的{len(rows)}个地点（具体地点，或所在道路）。"
        f"“{data.period.previous_name}”一栏为该地点在对比期的件数（未进入对比期前列时为“—”），"
        "两期均在前列的为持续高发地点。"
    )
    table = w.table(
        ("区（市）", "街道", "地点", "本期", data.period.previous_name, "主要类型"),
        rows,
        (False, False, False, True, True, False),
        (2, 3, 3, 1, 1, 3),
    )
    return Section("四、高发地点", (intro, table))


def _quality(data: ReportData, w: _Writer, charts: Collection[str]) -> Section:
    before = _by_key(data.previous.compliance, lambda u: u.unit)
    # The units furthest behind first: what a leader acts on.
    units = sorted(data.current.compliance, key=lambda u: (u.compliance, -u.due, u.unit))
    rows = []
    for u in units[:TABLE_ROWS]:
        old = before.get(u.unit)
        rows.append(
            (
                unit_label(u.unit),
                fmt_int(u.due),
                fmt_int(u.in_time),
                fmt_pct(u.compliance),
                rate_change_cell(u.compliance, old.compliance if old else None),
            )
        )
    blocks: list[Block] = []
    if "quality" in charts:
        blocks.append(Figure("quality", "自动派遣率与自动派遣准确率"))
    listed = f"，列出{TABLE_ROWS}个单位，共{len(units)}个" if len(units) > TABLE_ROWS else ""
    intro = f"各单位按时派遣情况（按时派遣率由低到高{listed}）：" if units else ""
    blocks.append(w.para(intro or "本期没有到期应派遣的事项。"))
    if units:
        blocks.append(
            w.table(
                ("单位", "应按时派遣", "按时", "按时派遣率", "较对比期"),
                rows,
                (False, True, True, True, True),
                (4, 2, 2, 2, 2),
            )
        )
    if "compliance" in charts:
        blocks.append(Figure("compliance", "按时派遣率最低的单位"))
    return Section("五、派遣质量", tuple(blocks))


_CASE_TITLES = {
    "critical": "特急事件",
    "overdue": "超时派遣或超时待派",
    "low_confidence": "模型把握不足、转人工的报告",
    "repeat_place": "多次被反映的地点",
}


def _case_row(case: NotableCase) -> tuple[str, ...]:
    place = "".join(p for p in (case.district, case.street, case.location) if p) or "—"
    kind = type_label(case.code, case.event_name)
    if case.kind == "overdue":
        late = duration(case.late_minutes)
        extra = f"仍待派遣，已超时{late}" if case.waiting else f"超时{late}派出"
    elif case.kind == "low_confidence":
        extra = f"置信度{case.confidence:.2f}"
    elif case.kind == "repeat_place":
        extra = f"本期{case.place_reports}次"
    else:
        extra = f"时限 {local_time(case.respond_by)}"
    return (
        local_time(case.received_at),
        place,
        kind,
        unit_label(case.unit),
        extra,
        excerpt(case.text),
    )


def _cases(data: ReportData, w: _Writer) -> Section:
    counts = {
        "critical": data.case_counts.critical,
        "overdue": data.case_counts.overdue,
        "low_confidence": data.case_counts.low_confidence,
        "repeat_place": data.case_counts.repeat_places,
    }
    blocks: list[Block] = []
    for kind in CASE_KINDS:
        listed = [c for c in data.cases if c.kind == kind]
        unit = "处" if kind == "repeat_place" else "件"
        shown = f"，列出{len(listed)}{unit}" if len(listed) < counts[kind] else ""
        blocks.append(w.para(f"{_CASE_TITLES[kind]}：共{fmt_int(counts[kind])}{unit}{shown}。"))
        if listed:
            blocks.append(
                w.table(
                    ("受理时间", "地点", "类型", "承办单位", "说明", "诉求摘要"),
                    [_case_row(c) for c in listed],
                    (False,) * 6,
                    (2, 4, 3, 3, 2, 6),
                )
            )
    return Section("六、重点关注", tuple(blocks))


def _notes(data: ReportData, withheld: int) -> Section:
    period, previous = data.period, data.period.previous()
    # Literals and numbers only: not screened (see the module's docstring).
    lines = [
        f"统计期：{_dates(period)}（北京时间），对比期：{_dates(previous)}。",
        "受理量按报告受理时间统计，同一报告只计一次；自动派遣准确率为经调度员核验的自动派遣中"
        "确认无误的比例；按时派遣率为到期应派遣的报告中在时限内派至承办单位的比例"
        "（待人工处理且已过时限的计为超时）。",
        f"本报告共有{withheld}项内容因未通过内容审查而隐去。",
    ]
    return Section("附注", tuple(Paragraph(text, note=True) for text in lines))


def compose(
    data: ReportData,
    screen: Screen,
    generated_at: datetime,
    charts: Collection[str] = (),
) -> ReportDocument:
    """The report as a screened document; ``charts``: the chart keys there are images for."""
    w = _Writer(as_screener(screen))
    period = data.period
    summary = w.para(summary_text(data))
    if data.current.totals.reports == 0:
        sections: list[Section] = [Section("本期情况", (Paragraph("本期无数据。"),))]
    else:
        sections = [
            _overview(data, w, charts),
            _types(data, w, charts),
            _districts(data, w, charts),
            _places(data, w),
            _quality(data, w, charts),
            _cases(data, w),
        ]
        if not charts:
            sections[0] = Section(
                sections[0].title,
                (
                    *sections[0].blocks,
                    Paragraph("本期报告未附图表，数据见各表。", note=True),
                ),
            )
    sections.append(_notes(data, w.withheld))
    return ReportDocument(
        title=f"青岛市12345政务服务便民热线及城市管理事件{period.name}",
        period_label=period.label,
        generated=f"{generated_at.astimezone(LOCAL):%Y年%m月%d日 %H:%M}（北京时间）",
        summary=summary,
        sections=tuple(sections),
        withheld=w.withheld,
    )


# --- HTML ----------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_block(block: Block, charts: Mapping[str, bytes]) -> str:
    if isinstance(block, Withheld):
        return f'<p class="withheld">{_e(block.note)}</p>'
    if isinstance(block, Paragraph):
        return f'<p class="{"note" if block.note else "text"}">{_e(block.text)}</p>'
    if isinstance(block, Figure):
        png = charts.get(block.chart)
        if png is None:
            return ""
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(block.caption)}">'
            f"<figcaption>{_e(block.caption)}</figcaption></figure>"
        )
    head = "".join(
        f'<th class="{"num" if n else "txt"}">{_e(c)}</th>'
        for c, n in zip(block.columns, block.numeric, strict=True)
    )
    body = []
    for row in block.rows:
        if isinstance(row, Withheld):
            body.append(
                f'<tr class="withheld"><td colspan="{len(block.columns)}">{_e(row.note)}</td></tr>'
            )
            continue
        cells = "".join(
            f'<td class="{"num" if n else "txt"}">{_e(v)}</td>'
            for v, n in zip(row, block.numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@functools.cache
def _template() -> string.Template:
    return string.Template(TEMPLATE.read_text("utf-8"))


def html_document(doc: ReportDocument, charts: Mapping[str, bytes]) -> str:
    """One self-contained HTML file (charts inlined as data: URIs); every value escaped."""
    summary = _html_block(doc.summary, charts)
    sections = "".join(
        f"<section><h2>{_e(s.title)}</h2>{''.join(_html_block(b, charts) for b in s.blocks)}"
        "</section>"
        for s in doc.sections
    )
    return _template().substitute(
        title=_e(f"{doc.title}（{doc.period_label}）"),
        heading=_e(doc.title),
        period=_e(doc.period_label),
        generated=_e(doc.generated),
        summary=summary,
        sections=sections,
        withheld=str(doc.withheld),
    )


def render_html(
    data: ReportData,
    charts: Mapping[str, bytes],
    screen: Screen,
    generated_at: datetime,
) -> RenderedReport:
    doc = compose(data, screen, generated_at, charts.keys())
    summary = doc.summary.text if isinstance(doc.summary, Paragraph) else ""
    return RenderedReport(html_document(doc, charts), doc.withheld, summary, doc)


# --- fonts ---------------------------------------------------------------------------------

# Simplified Chinese faces first; the other CJK ones cover the same characters.
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Noto Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK JP",
)


@dataclass(frozen=True, slots=True)
class CjkFont:
    family: str
    path: Path
    index: int  # the face within a TrueType/OpenType collection (.ttc)
    bold_path: Path | None = None
    bold_index: int = 0


@functools.cache
def find_cjk_font() -> CjkFont | None:
    """The first installed font of CJK_FAMILIES, as matplotlib's font manager knows it."""
    try:
        from matplotlib import font_manager
    except ImportError:
        return None
    entries = font_manager.fontManager.ttflist
    for family in CJK_FAMILIES:
        faces = [f for f in entries if f.name == family and f.style == "normal"]
        regular = [f for f in faces if _weight(f.weight) < 600]
        bold = [f for f in faces if _weight(f.weight) >= 600]
        if regular:
            r = min(regular, key=lambda f: abs(_weight(f.weight) - 400))
            b = min(bold, key=lambda f: abs(_weight(f.weight) - 700)) if bold else None
            return CjkFont(
                family,
                Path(r.fname),
                int(getattr(r, "index", 0) or 0),
                Path(b.fname) if b else None,
                int(getattr(b, "index", 0) or 0) if b else 0,
            )
    return None


def _weight(weight: Any) -> int:
    if isinstance(weight, int):
        return weight
    return {"light": 300, "normal": 400, "regular": 400, "medium": 500, "bold": 700}.get(
        str(weight).lower(), 400
    )


# --- charts --------------------------------------------------------------------------------

_AUTO = "auto"
_BLUE, _GREY, _ORANGE, _GREEN = "#2f6db5", "#9aa5b1", "#e07b39", "#3a9b5c"
_CHANNEL_COLOURS = (
    "#2f6db5",
    "#e07b39",
    "#3a9b5c",
    "#c44e52",
    "#8172b2",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
)


def _buckets(period: ReportPeriod) -> list[str]:
    if period.kind == "day":
        return [f"{h}时" for h in range(24)]
    return [
        f"{(period.first + timedelta(days=i)).month}/{(period.first + timedelta(days=i)).day}"
        for i in range(period.days)
    ]


def _bucket(period: ReportPeriod, hour: datetime) -> int:
    """The hour of the day (day reports) or the day of the period; outside: <0 or too big."""
    if period.kind == "day":
        return int((hour - period.since).total_seconds() // 3600)
    return (hour.astimezone(LOCAL).date() - period.first).days


def trend_series(period: ReportPeriod, rows: Sequence[HourVolume]) -> dict[str, list[int]]:
    """Reports per channel per bucket (local hour of a day; local day of a week or month)."""
    size = 24 if period.kind == "day" else period.days
    series: dict[str, list[int]] = defaultdict(lambda: [0] * size)
    for r in rows:
        i = _bucket(period, r.hour)
        if 0 <= i < size:
            series[r.channel][i] += r.reports
    return dict(series)


def quality_series(
    period: ReportPeriod, rows: Sequence[HourQuality]
) -> tuple[list[float | None], list[float | None]]:
    """Automatic dispatch rate and accuracy per bucket (None where nothing to divide)."""
    size = 24 if period.kind == "day" else period.days
    sums = [[0, 0, 0, 0] for _ in range(size)]
    for r in rows:
        i = _bucket(period, r.hour)
        if 0 <= i < size:
            for j, v in enumerate(
                (r.reports, r.auto_dispatched, r.auto_with_feedback, r.auto_correct)
            ):
                sums[i][j] += v
    rate = [s[1] / s[0] if s[0] else None for s in sums]
    accuracy = [s[3] / s[2] if s[2] else None for s in sums]
    return rate, accuracy


def render_charts(
    data: ReportData,
    *,
    screen: Screen | None = None,
    font: CjkFont | None | Literal["auto"] = _AUTO,
) -> dict[str, bytes]:
    """The report's charts as PNG bytes (matplotlib, Agg). None without data, and none
    without a CJK font: labels in a Latin font would be empty boxes. Labels ``screen``
    flags are replaced with a note (the table rows naming them are withheld and counted).
    """
    chosen = find_cjk_font() if font == _AUTO else font
    if chosen is None or not isinstance(chosen, CjkFont) or data.current.totals.reports == 0:
        return {}
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    checks = None if screen is None else as_screener(screen)

    def label(text: str) -> str:
        return text if checks is None or checks.passes(text) else "（已隐去）"

    rc = {
        "font.family": "sans-serif",
        # Per-glyph fallback to DejaVu for what the CJK face lacks.
        "font.sans-serif": [chosen.family, "DejaVu Sans"],
        "axes.unicode_minus": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 12,
        "font.size": 9,
    }
    charts: dict[str, bytes] = {}
    # Figures without pyplot: no global figure registry, no GUI backend; savefig uses Agg.
    with matplotlib.rc_context(rc):
        for name, draw in (
            ("trend", _chart_trend),
            ("types", _chart_types),
            ("districts", _chart_districts),
            ("hotspots", _chart_hotspots),
            ("quality", _chart_quality),
            ("compliance", _chart_compliance),
        ):
            fig = MplFigure(figsize=(8, 3.6), dpi=110, layout="constrained")
            if draw(fig, data, label):
                buf = io.BytesIO()
                fig.savefig(buf, format="png", metadata={"Software": None})
                charts[name] = buf.getvalue()
    return charts


Label = Callable[[str], str]


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    # Counts of reports: no 0.5 ticks.
    axis.set_major_locator(MaxNLocator(integer=True))


def _chart_trend(fig: Any, data: ReportData, label: Label) -> bool:
    period = data.period
    current = trend_series(period, data.current.by_hour)
    previous = trend_series(period.previous(), data.previous.by_hour)
    names = _buckets(period)
    x = list(range(len(names)))
    ax = fig.subplots()
    bottom = [0] * len(x)
    for i, channel in enumerate(sorted(current, key=lambda c: -sum(current[c]))):
        values = current[channel]
        ax.bar(
            x,
            values,
            bottom=bottom,
            color=_CHANNEL_COLOURS[i % len(_CHANNEL_COLOURS)],
            label=label(channel_label(channel)),
            width=0.8,
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if previous:
        totals = [
            sum(v[i] for v in previous.values()) for i in range(len(next(iter(previous.values()))))
        ]
        ax.plot(
            list(range(len(totals))),
            totals,
            color=_GREY,
            linestyle="--",
            marker=".",
            label=data.period.previous_name,
        )
    step = math.ceil(len(x) / 12)  # at most 12 labels
    ax.set_xticks(x[::step], names[::step])
    ax.set_ylabel("件", rotation=0, labelpad=10)
    _integer_ticks(ax.yaxis)
    ax.legend(fontsize=8, ncols=4, frameon=False)
    return True


def _paired_bars(
    ax: Any,
    names: Sequence[str],
    current: Sequence[int],
    previous: Sequence[int],
    previous_name: str,
) -> None:
    y = list(range(len(names)))
    ax.barh([v - 0.2 for v in y], current, height=0.4, color=_BLUE, label="本期")
    ax.barh([v + 0.2 for v in y], previous, height=0.4, color=_GREY, label=previous_name)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    for v, n in zip(y, current, strict=True):
        ax.annotate(
            f"{n:,}",
            (n, v - 0.2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_xlabel("件")
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=8, frameon=False, loc="lower right")


def _chart_types(fig: Any, data: ReportData, label: Label) -> bool:
    top = data.current.by_type[:10]
    if not top:
        return False
    before = _by_key(data.previous.by_type, lambda t: (t.code, t.event_name))
    previous = [
        before[(t.code, t.event_name)].reports if (t.code, t.event_name) in before else 0
        for t in top
    ]
    fig.set_size_inches(8, 0.35 * len(top) + 1.2)
    _paired_bars(
        fig.subplots(),
        [label(type_label(t.code, t.event_name)) for t in top],
        [t.reports for t in top],
        previous,
        data.period.previous_name,
    )
    return True


def _chart_districts(fig: Any, data: ReportData, label: Label) -> bool:
    rows = data.current.by_district
    if not rows:
        return False
    before = _by_key(data.previous.by_district, lambda d: d.district)
    previous = [before[d.district].reports if d.district in before else 0 for d in rows]
    fig.set_size_inches(8, 0.35 * len(rows) + 1.2)
    _paired_bars(
        fig.subplots(),
        [label(district_label(d.district)) for d in rows],
        [d.reports for d in rows],
        previous,
        data.period.previous_name,
    )
    return True


def _chart_hotspots(fig: Any, data: ReportData, label: Label) -> bool:
    cells = data.current.hotspots
    if not cells:
        return False
    totals: dict[str, int] = defaultdict(int)
    for c in cells:
        totals[c.district] += c.reports
    districts = sorted(totals, key=lambda d: (-totals[d], d))
    classes = sorted({c.event_class for c in cells}, key=lambda k: (k == "", k))
    grid = [[0] * len(classes) for _ in districts]
    for c in cells:
        grid[districts.index(c.district)][classes.index(c.event_class)] += c.reports
    fig.set_size_inches(8, 0.35 * len(districts) + 1.6)
    ax = fig.subplots()
    image = ax.imshow(grid, aspect="auto", cmap="Oranges")
    ax.set_xticks(
        range(len(classes)),
        [label(class_label(k, data.event_classes)) for k in classes],
        rotation=30,
        ha="right",
    )
    ax.set_yticks(range(len(districts)), [label(district_label(d)) for d in districts])
    peak = max(max(row) for row in grid) or 1
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v:
                ax.text(
                    j,
                    i,
                    f"{v}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > peak * 0.6 else "black",
                )
    bar = fig.colorbar(image, ax=ax)
    _integer_ticks(bar.ax.yaxis)
    bar.set_label("件", rotation=0, labelpad=10)
    return True


def _chart_quality(fig: Any, data: ReportData, label: Label) -> bool:
    rate, accuracy = quality_series(data.period, data.current.quality)
    if all(v is None for v in rate):
        return False
    names = _buckets(data.period)
    x = list(range(len(names)))
    ax = fig.subplots()

    def pct(values: list[float | None]) -> list[float]:
        return [math.nan if v is None else v * 100 for v in values]

    ax.plot(x, pct(rate), color=_BLUE, marker=".", label="自动派遣率")
    ax.plot(x, pct(accuracy), color=_GREEN, marker=".", label="自动派遣准确率")
    step = math.ceil(len(x) / 12)  # at most 12 labels
    ax.set_xticks(x[::step], names[::step])
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return True


def _chart_compliance(fig: Any, data: ReportData, label: Label) -> bool:
    units = sorted(data.current.compliance, key=lambda u: (u.compliance, -u.due, u.unit))[:12]
    if not units:
        return False
    fig.set_size_inches(8, 0.35 * len(units) + 1.2)
    ax = fig.subplots()
    y = list(range(len(units)))
    overall = data.current.totals.compliance
    colours = [_ORANGE if overall is not None and u.compliance < overall else _BLUE for u in units]
    ax.barh(y, [u.compliance * 100 for u in units], color=colours)
    ax.set_yticks(y, [label(unit_label(u.unit)) for u in units])
    ax.invert_yaxis()
    for v, u in zip(y, units, strict=True):
        ax.annotate(
            f"{u.compliance * 100:.1f}%（{u.in_time}/{u.due}）",
            (u.compliance * 100, v),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    if overall is not None:
        ax.axvline(overall * 100, color=_GREY, linestyle="--", label=f"全市 {fmt_pct(overall)}")
        # Above the axes: the bars fill the plot from 0 to 100%.
        ax.legend(fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1, 1))
    ax.set_xlim(0, 118)
    ax.set_xlabel("按时派遣率（%）")
    return True


# --- PDF -----------------------------------------------------------------------------------


def render_pdf(doc: ReportDocument, charts: Mapping[str, bytes], font: CjkFont) -> bytes:
    """The same document as an A4 PDF (fpdf2, the CJK font embedded as a subset)."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_font("cjk", "", str(font.path), collection_font_number=font.index)
    if font.bold_path is not None:
        pdf.add_font("cjk", "B", str(font.bold_path), collection_font_number=font.bold_index)
    bold = "B" if font.bold_path is not None else ""
    pdf.set_title(f"{doc.title}（{doc.period_label}）")
    pdf.set_creator("citystream")
    pdf.add_page()
    width = pdf.epw
    line = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}

    def text(value: str, size: float = 10, style: str = "", grey: bool = False) -> None:
        pdf.set_font("cjk", style, size)
        pdf.set_text_color(110 if grey else 20)
        pdf.multi_cell(width, size * 0.55, _pdf_safe(value), align="L", **line)
        pdf.ln(1.5)

    text(doc.title, 16, bold)
    text(f"{doc.period_label}　　生成于 {doc.generated}", 9, grey=True)
    pdf.ln(2)
    summary = doc.summary
    text(summary.text if isinstance(summary, Paragraph) else summary.note, 11)
    for section in doc.sections:
        pdf.ln(3)
        text(section.title, 13, bold)
        for block in section.blocks:
            if isinstance(block, Withheld):
                text(block.note, 9, grey=True)
            elif isinstance(block, Paragraph):
                text(block.text, 9 if block.note else 10, grey=block.note)
            elif isinstance(block, Figure):
                png = charts.get(block.chart)
                if png is not None:
                    pdf.image(io.BytesIO(png), w=width)
                    text(block.caption, 8, grey=True)
            else:
                _pdf_table(pdf, block, bold)
                pdf.ln(2)
    return bytes(pdf.output())


def _pdf_safe(value: str) -> str:
    """Emoji and other characters beyond the CJK font's range are left out of the PDF
    (the HTML keeps them): the font has no glyphs for them."""
    return "".join(ch for ch in value if ord(ch) <= 0xFFFF)


def _pdf_table(pdf: Any, table: Table, bold: str) -> None:
    pdf.set_font("cjk", "", 8)
    pdf.set_text_color(20)
    align = tuple("RIGHT" if n else "LEFT" for n in table.numeric)
    with pdf.table(
        col_widths=table.widths or None,
        text_align=align,
        line_height=4.5,
        headings_style=_heading_style(bool(bold)),
    ) as out:
        head = out.row()
        for column in table.columns:
            head.cell(_pdf_safe(column))
        for row in table.rows:
            cells = out.row()
            if isinstance(row, Withheld):
                cells.cell(_pdf_safe(row.note), colspan=len(table.columns), align="LEFT")
            else:
                for value in row:
                    cells.cell(_pdf_safe(value))


def _heading_style(bold: bool) -> Any:
    from fpdf.fonts import FontFace

    # Bold only when a bold face was found (fpdf2 refuses a style it has no font for).
    return FontFace(emphasis="BOLD" if bold else None, fill_color=(234, 239, 246))
