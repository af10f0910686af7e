"""The city dashboard's panels and the dispatcher board's queries, as SQL text.

Pure: each function takes typed arguments and returns one SELECT; ``web.server`` runs it.
The panels read the hourly aggregate tables of migration 0003 with ``-Merge`` functions,
the board reads ``review_items`` and time-bounded slices of the logs. Every query runs
unchanged on chDB (ClickHouse 26.x) and on Debian's clickhouse-server 18.16, and gives
the same numbers on both; so it keeps to what 18.16 understands: one JOIN at most per
SELECT (UNION ALL of partial counts and scalar subqueries instead), no ``WITH FILL``,
ratios guarded with ``if(x = 0, ...)`` (NULL where nothing to divide: both engines return
Nullable(Float64)), ``UNION ALL`` branches with identical column types.

Times are rendered from ``datetime`` values only (aware ones converted to UTC, naive ones
taken as UTC), as ``toDateTime('YYYY-MM-DD hh:mm:ss', 'UTC')``, so the server's time zone
cannot shift a bound. No free text is ever put into SQL: limits are validated integers and
the one string helper (``sql_string``) escapes.

Windows: the panels count reports by the hour they were received. A panel's window is the
hourly buckets starting in ``[since floored to the hour, until)``; the dashboard passes
whole hours (``web.views.city_window``).

Counts are exact distinct report ids, so a decision stored twice counts once. A report
decided twice with different facts (first sent to review because no model answered, then
decided) counts once in totals and once under each code, place or unit it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Decisions reach the log within seconds of the report; a report decided more than this
# after it was received is left out of the board's "recent" lists, which is what lets
# them skip old partitions (the log is partitioned by the month received).
DECIDED_WITHIN = timedelta(days=1)
MAX_LIMIT = 10_000
TOP_PLACES = 20
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(2105, 12, 31, tzinfo=UTC)


# What the board's queries select, in order (the board's front-end reads these names).
REVIEW_COLUMNS = (
    "input_id",
    "received_at",
    "respond_by",
    "decided_at",
    "code",
    "event_name",
    "urgency",
    "unit",
    "district",
    "street",
    "channel",
    "text",
    "confidence",
    "review_reasons",
    "alt_units",
    "alt_codes",
    "alt_confidences",
)
RECENT_COLUMNS = (
    "input_id",
    "decided_at",
    "received_at",
    "code",
    "event_name",
    "urgency",
    "unit",
    "district",
    "street",
    "channel",
    "confidence",
    "auto",
    "text",
)
HANDLED_COLUMNS = ("input_id", "verdict", "unit", "decided_unit", "dispatcher_id", "given_at")
COUNT_COLUMNS = (
    "decisions_last_hour",
    "auto_last_hour",
    "review_waiting",
    "review_overdue",
    "handled_last_hour",
)


# --- rendering -----------------------------------------------------------------------------


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC (as the tables store them)."""
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if not _EARLIEST <= aware <= _LATEST:
        raise ValueError(f"{moment.isoformat()} is outside what a ClickHouse DateTime holds")
    return aware


def sql_datetime(moment: datetime) -> str:
    """A DateTime literal, to the second (fractions dropped), explicitly in UTC."""
    return f"toDateTime('{utc(moment):%Y-%m-%d %H:%M:%S}', 'UTC')"


def sql_string(value: str) -> str:
    """A quoted ClickHouse string literal: backslashes and quotes escaped."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {type(value).__name__}")
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def sql_limit(limit: int) -> int:
    # bool is an int in Python; a True limit is a caller's bug, not 1.
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def floor_hour(moment: datetime) -> datetime:
    return utc(moment).replace(minute=0, second=0, microsecond=0)


def _window(since: datetime, until: datetime, column: str = "hour") -> str:
    start, end = floor_hour(since), utc(until)
    if end <= start:
        raise ValueError(f"empty window: since {since.isoformat()}, until {until.isoformat()}")
    return f"{column} >= {sql_datetime(start)} AND {column} < {sql_datetime(end)}"


# --- shared fragments ----------------------------------------------------------------------


def _pending_review(condition: str | None = None) -> str:
    """Review items still waiting: no verdict yet, and not decided automatically since
    (a report first sent to review because no model answered, then decided). Both checks
    look up only the review items' ids, on the logs' primary key (input_id).
    ``condition``: on review_items' columns, e.g. a window on received_at."""
    where = f"WHERE {condition}" if condition else ""
    return f"""
        SELECT {", ".join(REVIEW_COLUMNS)}
        FROM review_items FINAL
        WHERE input_id NOT IN
            (
                SELECT input_id FROM dispatch_feedback_log
                WHERE input_id IN (SELECT input_id FROM review_items {where})
            )
            AND input_id NOT IN
            (
                SELECT input_id FROM dispatch_decisions_log
                WHERE input_id IN (SELECT input_id FROM review_items {where})
                GROUP BY input_id
                HAVING argMax(auto, decided_at_ms) = 1
            )
            {"AND " + condition if condition else ""}"""


# The key the partial counts are grouped by, per source: the aggregate tables have both;
# a review item's hour is the hour it was received.
_PART_KEYS = {
    None: ("", "", ""),
    "hour": ("hour, ", "toStartOfHour(received_at) AS hour, ", "GROUP BY hour"),
    "unit": ("unit, ", "unit, ", "GROUP BY unit"),
}


def _dispatch_parts(
    since: datetime, until: datetime, key: str | None, *, with_due: bool = True
) -> str:
    """A UNION ALL of partial counts, grouped by ``key`` (None: one row per branch), each
    branch with the same columns and types:

    r reports, a auto-dispatched, fj / fc automatic ones judged / confirmed, d due,
    t in time. Due and in time: automatic decisions at their decision; dispatchers' at
    their verdict on the review item; review items still waiting after their deadline (as
    of now) are due and not in time (``with_due``: include that branch). Decisions
    stored before deadlines were recorded (respond_by = received_at) are left out of due
    and in time.
    """
    select_key, item_key, group = _PART_KEYS[key]
    zero = "toUInt64(0)"
    in_window = _window(since, until)
    parts = [
        f"""
        SELECT {select_key}
            uniqExactMerge(reports) AS r,
            uniqExactMerge(auto_dispatched) AS a,
            {zero} AS fj,
            {zero} AS fc,
            uniqExactMerge(auto_due) AS d,
            uniqExactMerge(auto_in_time) AS t
        FROM dashboard_reports_hourly
        WHERE {in_window}
        {group}""",
        f"""
        SELECT {select_key}
            {zero} AS r,
            {zero} AS a,
            uniqExactMergeIf(judged, decision = 1) AS fj,
            uniqExactMergeIf(confirmed, decision = 1) AS fc,
            uniqExactMergeIf(dispatcher_due, decision = 0) AS d,
            uniqExactMergeIf(dispatched_in_time, decision = 0) AS t
        FROM dashboard_feedback_hourly
        WHERE {in_window}
        {group}""",
    ]
    if with_due:
        item_window = _window(since, until, "toStartOfHour(received_at)")
        parts.append(
            f"""
        SELECT {item_key}
            {zero} AS r,
            {zero} AS a,
            {zero} AS fj,
            {zero} AS fc,
            count() AS d,
            {zero} AS t
        FROM ({_pending_review(item_window)})
        WHERE respond_by < now() AND respond_by > received_at
        {group}"""
        )
    return "\n        UNION ALL".join(parts)


# --- panels --------------------------------------------------------------------------------


def totals_sql(since: datetime, until: datetime) -> str:
    """One row for the window. auto_rate is 0 without reports; auto_accuracy and
    compliance are NULL when nothing was judged / due.

    Due: reports dispatched, automatically (at the decision) or by a dispatcher (at the
    verdict), plus review items received in the window still waiting past their deadline
    now (read from review_items, which is small). In time: dispatched by respond_by.
    """
    return f"""
SELECT
    reports,
    auto_dispatched,
    if(reports = 0, toFloat64(0), auto_dispatched / reports) AS auto_rate,
    auto_with_feedback,
    auto_correct,
    if(auto_with_feedback = 0, NULL, auto_correct / auto_with_feedback) AS auto_accuracy,
    due,
    in_time,
    if(due = 0, NULL, in_time / due) AS compliance
FROM
(
    SELECT
        sum(r) AS reports,
        sum(a) AS auto_dispatched,
        sum(fj) AS auto_with_feedback,
        sum(fc) AS auto_correct,
        sum(d) AS due,
        sum(t) AS in_time
    FROM ({_dispatch_parts(since, until, None)})
)"""


def volume_by_hour_sql(since: datetime, until: datetime) -> str:
    """Reports per hour received and channel (a stacked time series; empty hours absent)."""
    return f"""
SELECT hour, channel, uniqExactMerge(reports) AS reports
FROM dashboard_reports_hourly
WHERE {_window(since, until)}
GROUP BY hour, channel
ORDER BY hour, channel"""


def volume_by_type_sql(since: datetime, until: datetime) -> str:
    """Reports per event type, most first (code '' : no model answered)."""
    return f"""
SELECT code, event_name, uniqExactMerge(reports) AS reports
FROM dashboard_reports_hourly
WHERE {_window(since, until)}
GROUP BY code, event_name
ORDER BY reports DESC, code, event_name"""


def volume_by_district_sql(since: datetime, until: datetime) -> str:
    """Reports per district, most first ('' : the report named none)."""
    return f"""
SELECT district, uniqExactMerge(reports) AS reports
FROM dashboard_reports_hourly
WHERE {_window(since, until)}
GROUP BY district
ORDER BY reports DESC, district"""


def hotspots_sql(since: datetime, until: datetime) -> str:
    """District x event class (the code's letter; '' : no model answered) grid, for a
    heatmap."""
    return f"""
SELECT district, substring(code, 1, 1) AS event_class, uniqExactMerge(reports) AS reports
FROM dashboard_reports_hourly
WHERE {_window(since, until)}
GROUP BY district, event_class
ORDER BY district, event_class"""


def quality_by_hour_sql(since: datetime, until: datetime) -> str:
    """Automation and accuracy per hour received; judged = a verdict on an automatic
    decision, correct = confirmed. auto_accuracy is NULL in hours nothing was judged."""
    return f"""
SELECT
    hour,
    reports,
    auto_dispatched,
    if(reports = 0, toFloat64(0), auto_dispatched / reports) AS auto_rate,
    auto_with_feedback,
    auto_correct,
    if(auto_with_feedback = 0, NULL, auto_correct / auto_with_feedback) AS auto_accuracy
FROM
(
    SELECT
        hour,
        sum(r) AS reports,
        sum(a) AS auto_dispatched,
        sum(fj) AS auto_with_feedback,
        sum(fc) AS auto_correct
    FROM ({_dispatch_parts(since, until, "hour", with_due=False)})
    GROUP BY hour
    -- An hour with only verdicts that do not say how their decision was made: nothing.
    HAVING reports > 0 OR auto_with_feedback > 0
)
ORDER BY hour"""


def compliance_by_unit_sql(since: datetime, until: datetime) -> str:
    """Per unit: due, in time, their ratio (see ``totals_sql`` for what is due). The unit
    is the one decided for automatic dispatch, the dispatcher's for reviewed reports, the
    proposed one ('' when none) for review items still waiting. Units with nothing due
    are left out, so compliance is never NULL here."""
    return f"""
SELECT unit, due, in_time, if(due = 0, NULL, in_time / due) AS compliance
FROM
(
    SELECT unit, sum(d) AS due, sum(t) AS in_time
    FROM ({_dispatch_parts(since, until, "unit")})
    GROUP BY unit
)
WHERE due > 0
ORDER BY due DESC, unit"""


def top_places_sql(since: datetime, until: datetime) -> str:
    """The places reported most (a named place, else the road), with their most frequent
    event type (ties: the smaller code)."""
    return f"""
SELECT
    district,
    street,
    location,
    uniqExactMerge(place_reports) AS reports,
    argMin(code, tuple(-toInt64(code_reports), code)) AS top_code
FROM
(
    SELECT
        district,
        street,
        location,
        code,
        uniqExactMergeState(reports) AS place_reports,
        uniqExactMerge(reports) AS code_reports
    FROM dashboard_places_hourly
    WHERE {_window(since, until)} AND location != ''
    GROUP BY district, street, location, code
)
GROUP BY district, street, location
ORDER BY reports DESC, district, street, location
LIMIT {TOP_PLACES}"""


@dataclass(frozen=True, slots=True)
class Panel:
    name: str
    title: str
    columns: tuple[str, ...]  # exactly what ``sql`` selects, in order
    sql: Callable[[datetime, datetime], str]


PANELS: tuple[Panel, ...] = (
    Panel(
        "totals",
        "总览",
        (
            "reports",
            "auto_dispatched",
            "auto_rate",
            "auto_with_feedback",
            "auto_correct",
            "auto_accuracy",
            "due",
            "in_time",
            "compliance",
        ),
        totals_sql,
    ),
    Panel("volume_by_hour", "每小时受理量", ("hour", "channel", "reports"), volume_by_hour_sql),
    Panel("volume_by_type", "事件类型", ("code", "event_name", "reports"), volume_by_type_sql),
    Panel("volume_by_district", "各区受理量", ("district", "reports"), volume_by_district_sql),
    Panel("hotspots", "区域 × 大类", ("district", "event_class", "reports"), hotspots_sql),
    Panel(
        "quality_by_hour",
        "自动派遣率与准确率",
        (
            "hour",
            "reports",
            "auto_dispatched",
            "auto_rate",
            "auto_with_feedback",
            "auto_correct",
            "auto_accuracy",
        ),
        quality_by_hour_sql,
    ),
    Panel(
        "compliance_by_unit",
        "各单位按时派遣率",
        ("unit", "due", "in_time", "compliance"),
        compliance_by_unit_sql,
    ),
    Panel(
        "top_places",
        "高发地点",
        ("district", "street", "location", "reports", "top_code"),
        top_places_sql,
    ),
)


def panel(name: str) -> Panel:
    found = next((p for p in PANELS if p.name == name), None)
    if found is None:
        raise KeyError(f"no panel {name!r}")
    return found


# --- the dispatcher board ------------------------------------------------------------------


def review_queue_sql(now: datetime, limit: int) -> str:
    """The review items waiting for a dispatcher, the nearest deadline first.

    ``now`` is checked but does not filter: an item whose report is stamped a little
    ahead of this clock must still show (the board computes time left from it)."""
    utc(now)
    return f"""
{_pending_review()}
ORDER BY respond_by, input_id
LIMIT {sql_limit(limit)}"""


def recent_decisions_sql(since: datetime, limit: int) -> str:
    """Decisions made since ``since``, newest first, each report once (its latest
    decision). Reports decided more than DECIDED_WITHIN after receipt are left out."""
    return f"""
SELECT {", ".join(RECENT_COLUMNS)}
FROM dispatch_decisions_log
WHERE decided_at >= {sql_datetime(since)}
    AND received_at >= {sql_datetime(utc(since) - DECIDED_WITHIN)}
ORDER BY decided_at_ms DESC, input_id
LIMIT 1 BY input_id
LIMIT {sql_limit(limit)}"""


def recently_handled_sql(since: datetime, limit: int) -> str:
    """Verdicts given since ``since``, newest first, each once (the log may hold a
    verdict twice until merged)."""
    return f"""
SELECT {", ".join(HANDLED_COLUMNS)}
FROM dispatch_feedback_log
WHERE given_at >= {sql_datetime(since)}
ORDER BY given_at DESC, feedback_id DESC
LIMIT 1 BY feedback_id
LIMIT {sql_limit(limit)}"""


def board_counts_sql(now: datetime) -> str:
    """One row: reports decided (and of them automatically) and reports given a verdict
    in the hour up to ``now``; review items waiting, and of them past their deadline.
    (ifNull: 26.x types a scalar subquery Nullable, 18.16 does not; same type on both.)"""
    end = sql_datetime(now)
    start = sql_datetime(utc(now) - timedelta(hours=1))
    oldest_received = sql_datetime(utc(now) - timedelta(hours=1) - DECIDED_WITHIN)
    return f"""
SELECT
    decisions_last_hour,
    auto_last_hour,
    ifNull((SELECT count() FROM ({_pending_review()})), 0) AS review_waiting,
    ifNull(
        (SELECT count() FROM ({_pending_review()}) WHERE respond_by < {end}), 0
    ) AS review_overdue,
    ifNull(
        (
            SELECT uniqExact(input_id) FROM dispatch_feedback_log
            WHERE given_at > {start} AND given_at <= {end}
        ),
        0
    ) AS handled_last_hour
FROM
(
    SELECT
        uniqExact(input_id) AS decisions_last_hour,
        uniqExactIf(input_id, auto = 1) AS auto_last_hour
    FROM dispatch_decisions_log
    WHERE decided_at > {start} AND decided_at <= {end} AND received_at >= {oldest_received}
)"""
