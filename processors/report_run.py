"""Write a leaders' report: run its queries, render it, write the files.

The glue ``citystream report`` and the worker's daily run call; the logic is in
``processors.report``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from processors.report import (
    ReportData,
    ReportPeriod,
    Screen,
    as_screener,
    find_cjk_font,
    render_charts,
    render_html,
    render_pdf,
    report_data,
    report_queries,
    reports_due,
)
from streams.clickhouse import QueryResult

log = logging.getLogger(__name__)

# Decisions arrive seconds after their reports, verdicts later: a day's report waits this
# long after local midnight before it is written.
SETTLE = timedelta(minutes=30)


class Queries(Protocol):
    """All a report needs of a warehouse (``streams.clickhouse.Warehouse`` has it)."""

    def query(self, sql: str, settings: Mapping[str, Any] | None = None) -> QueryResult: ...


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html_path: Path
    pdf_path: Path | None  # None: not asked for, or no CJK font to write it with
    seconds: float
    withheld: int
    summary: str = ""


def fetch_report_data(
    warehouse: Queries,
    period: ReportPeriod,
    event_classes: Mapping[str, str] | None = None,
) -> ReportData:
    results = {}
    for name, sql in report_queries(period).items():
        result = warehouse.query(sql)
        # A report on part of the rows would be wrong, not short: refuse it.
        if result.truncated:
            raise RuntimeError(f"report query {name!r} was cut at a row limit")
        results[name] = result
    return report_data(period, results, event_classes)


def report_stem(period: ReportPeriod) -> str:
    return f"report-{period.kind}-{period.last.isoformat()}"


def _write_atomically(path: Path, content: bytes) -> None:
    # A reader (a web page, a mail job) never sees a half-written report.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is for others to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_report(
    warehouse: Queries,
    period: str,
    end: date,
    screen: Screen,
    out_dir: Path,
    *,
    pdf: bool = True,
    event_classes: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> ReportFiles:
    """Write ``report-<period>-<end>.html`` (and ``.pdf``) into ``out_dir``.

    ``period``: day, week or month; the report covers that calendar period (Asia/Shanghai)
    up to and including ``end``. ``event_classes``: the taxonomy's classes by letter (e.g.
    ``web.views.city_labels(domain)["event_classes"]``), for the hotspot chart's labels.
    """
    started = time.perf_counter()
    generated_at = now or datetime.now(UTC)
    chosen = ReportPeriod.ending(period, end)
    data = fetch_report_data(warehouse, chosen, event_classes)
    # One screener for charts and text: each distinct text is screened once.
    screener = as_screener(screen)
    font = find_cjk_font()
    charts = render_charts(data, screen=screener, font=font)
    rendered = render_html(data, charts, screener, generated_at)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"{report_stem(chosen)}.html"
    _write_atomically(html_path, rendered.html.encode("utf-8"))
    pdf_path: Path | None = None
    if pdf and font is None:
        log.warning("report: no CJK font found (install fonts-noto-cjk); no PDF written")
    elif pdf and font is not None:
        pdf_path = html_path.with_suffix(".pdf")
        _write_atomically(pdf_path, render_pdf(rendered.document, charts, font))
    if rendered.withheld:
        log.warning(
            "report %s: %d item(s) withheld by the content screen (flags: %s)",
            html_path.name,
            rendered.withheld,
            ", ".join(screener.flagged),
        )
    return ReportFiles(
        html_path,
        pdf_path,
        round(time.perf_counter() - started, 3),
        rendered.withheld,
        rendered.summary,
    )


def generate_due_reports(
    warehouse: Queries,
    now: datetime,
    screen: Screen,
    out_dir: Path,
    *,
    pdf: bool = True,
    event_classes: Mapping[str, str] | None = None,
) -> list[ReportFiles]:
    """Write the reports due at ``now`` (yesterday's day report; last week's on Mondays,
    last month's on the 1st) that are not written yet. Safe to call as often as liked
    (e.g. from a timer every few minutes): a worker restarted after the hour still
    writes them, and none is written twice."""
    written = []
    for kind, end in reports_due(now - SETTLE):
        period = ReportPeriod.ending(kind, end)
        if (out_dir / f"{report_stem(period)}.html").exists():
            continue
        written.append(
            generate_report(
                warehouse,
                kind,
                end,
                screen,
                out_dir,
                pdf=pdf,
                event_classes=event_classes,
                now=now,
            )
        )
    return written
