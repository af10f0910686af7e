"""The dashboard's panels and the board's queries on both engines (chDB and the real 18.16
server): a small known set of decisions and verdicts, stored through the real ingest row
builders, read back through migration 0003's aggregate tables with exact numbers. On the
server the tables are kept by 0003's materialized views; on chDB (migration 0007) by the
worker's refresh, told of each insert as the sink tells it."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors.dashboard_refresh import DashboardRefresher
from processors.ingest import IngestContext, SourceMessage, StoredRow, ingest
from schemas import dashboard
from schemas.migrations import MIGRATIONS_DIR, discover, migrate
from streams.clickhouse import Warehouse

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = DAY + timedelta(hours=8)
UNTIL = DAY + timedelta(hours=10)
NOW = DAY + timedelta(hours=10, minutes=10)  # the board's "now"
FAR = datetime(2100, 1, 1, tzinfo=UTC)  # a deadline still ahead whatever the clock says
U1, U2 = "环境卫生服务中心", "城市管理局"
AGGREGATES = (
    "dashboard_reports_hourly",
    "dashboard_places_hourly",
    "dashboard_feedback_hourly",
    "review_items",
)


# --- the data set --------------------------------------------------------------------------


def _at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def _decision(
    input_id: str,
    *,
    auto: bool,
    received: datetime,
    decided: datetime,
    respond_by: datetime | None,
    code: str = "A01",
    event_name: str = "暴露垃圾",
    unit: str | None = U1,
    channel: str | None = "hotline_12345",
    district: str | None = "市南区",
    street: str | None = None,
    road: str | None = None,
    place: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    rec = {
        "kind": "dispatch_decision",
        "schema_version": 1,
        "input_id": input_id,
        "input_kind": "citizen_appeal",
        "channel": channel,
        "text": f"{input_id} 的诉求原文",
        "code": code,
        "event_name": event_name,
        "urgency": "normal" if code else "",
        "route": "S" if code else "",
        "unit": unit,
        "district": district,
        "street": street,
        "road": road,
        "place": place,
        "confidence": 0.9 if auto else 0.4,
        "auto": auto,
        "review_reasons": [] if auto else ["low_confidence"],
        "backend": "onnxruntime",
        "received_at": received.isoformat(),
        "respond_by": respond_by.isoformat() if respond_by else None,
        "decided_at": decided.isoformat(),
    }
    rec.update(extra)
    return rec


def _verdict(
    feedback_id: str,
    input_id: str,
    verdict: str,
    unit: str,
    given: datetime,
    *,
    auto: bool | None,
    decided_unit: str | None = U1,
    received: datetime | None = None,
    respond_by: datetime | None = None,
) -> dict[str, Any]:
    return {
        "kind": "dispatch_feedback",
        "schema_version": 1,
        "feedback_id": feedback_id,
        "input_id": input_id,
        "verdict": verdict,
        "unit": unit,
        "dispatcher_id": "d7",
        "given_at": given.isoformat(),
        "auto": auto,
        "decided_unit": decided_unit,
        "received_at": received.isoformat() if received else None,
        "respond_by": respond_by.isoformat() if respond_by else None,
    }


R1 = _decision(
    "r1", auto=True, received=_at(8, 5), decided=_at(8, 5, 1),
    respond_by=_at(8, 5) + timedelta(days=1),
    street="香港中路街道", road="香港中路", place="五四广场",
)
# No deadline sent: the row builder's fallback (received_at) means none, so it is left
# out of compliance (a decision stored before deadlines were recorded looks the same).
R2 = _decision(
    "r2", auto=True, received=_at(8, 20), decided=_at(8, 20, 2), respond_by=None,
    channel="app", street="香港中路街道", road="香港中路",
)
R3 = _decision(
    "r3", auto=False, received=_at(8, 40), decided=_at(8, 40, 1), respond_by=_at(9, 10),
    code="B01", event_name="非法小广告", unit=U2, district="崂山区", street="中韩街道",
    place="石老人",
)
R4 = _decision(
    "r4", auto=False, received=_at(9, 10), decided=_at(9, 10, 3), respond_by=_at(9, 40),
    channel="wechat", district="崂山区", street="中韩街道", place="石老人",
)
R5 = _decision(
    "r5", auto=False, received=_at(9, 15), decided=_at(9, 15, 2), respond_by=_at(9, 45),
    code="C01", event_name="施工扰民", unit=None, district="市北区",
    review_reasons=["street_unknown", "low_confidence"],
    alternatives=[
        {"unit": U1, "route": "D:环境卫生服务中心", "code": "C01", "confidence": 0.25},
        {"unit": "S", "route": "S", "code": "C02", "confidence": 0.125},
    ],
)
R6 = _decision(
    "r6", auto=False, received=_at(9, 30), decided=_at(9, 30, 1), respond_by=FAR,
    code="A02", event_name="积存垃圾渣土", channel="app", district="市北区", road="辽宁路",
)
# Sent to review because no model answered, then decided automatically.
R7_REVIEW = _decision(
    "r7", auto=False, received=_at(9, 50), decided=_at(9, 50, 1), respond_by=_at(11, 50),
    code="", event_name="", unit=None, channel="web", district="黄岛区", place="金沙滩",
    review_reasons=["no_model"],
)
R7 = _decision(
    "r7", auto=True, received=_at(9, 50), decided=_at(9, 55), respond_by=_at(11, 50),
    channel="web", district="黄岛区", place="金沙滩",
)
R8 = _decision("r8", auto=True, received=_at(7, 30), decided=_at(7, 30, 1), respond_by=_at(9))
R9 = _decision(
    "r9", auto=True, received=_at(10), decided=_at(10, 0, 2), respond_by=_at(12),
    code="D01", event_name="占道经营", unit=U2,
)
F1 = _verdict("f1", "r1", "confirmed", U1, _at(8, 30), auto=True, received=_at(8, 5),
              respond_by=_at(8, 5) + timedelta(days=1))
F2 = _verdict("f2", "r2", "corrected", U2, _at(9, 20), auto=True, received=_at(8, 20),
              respond_by=_at(8, 20))
F3 = _verdict("f3", "r3", "confirmed", U2, _at(9), auto=False, decided_unit=U2,
              received=_at(8, 40), respond_by=_at(9, 10))
F4 = _verdict("f4", "r4", "corrected", U2, _at(10, 30), auto=False, received=_at(9, 10),
              respond_by=_at(9, 40))
F8 = _verdict("f8", "r8", "corrected", U2, _at(7, 45), auto=True, received=_at(7, 30),
              respond_by=_at(9))
# A verdict that does not say how its decision was made, nor when the report came.
F8_OLD = _verdict("f8old", "r8", "corrected", U2, _at(8, 10), auto=None, decided_unit=None)
# Another, counted in the hour it was given: an hour with no reports.
F9_OLD = _verdict("f9old", "r9", "confirmed", U2, _at(11, 5), auto=None, decided_unit=U2)

ORDERS, REVIEW, FEEDBACK = "dispatch.orders", "dispatch.review", "dispatch.feedback"
# r1 and f1 twice: the sink's re-delivery after a crash (at-least-once).
MESSAGES = [
    (ORDERS, R1), (ORDERS, R1), (ORDERS, R2), (REVIEW, R3), (REVIEW, R4), (REVIEW, R5),
    (REVIEW, R6), (REVIEW, R7_REVIEW), (ORDERS, R7), (ORDERS, R8), (ORDERS, R9),
    (FEEDBACK, F1), (FEEDBACK, F1), (FEEDBACK, F2), (FEEDBACK, F3), (FEEDBACK, F4),
    (FEEDBACK, F8), (FEEDBACK, F8_OLD), (FEEDBACK, F9_OLD),
]


def _store(
    warehouse: Warehouse, ctx: IngestContext, refresher: DashboardRefresher | None = None
) -> None:
    for offset, (topic, rec) in enumerate(MESSAGES):
        msg = SourceMessage(
            topic=topic,
            partition=0,
            offset=offset,
            timestamp=NOW,
            key=None,
            value=json.dumps({k: v for k, v in rec.items() if v is not None}).encode(),
        )
        result = ingest(msg, ctx, NOW)
        assert isinstance(result, StoredRow), result
        # One insert each, as separate sink flushes: duplicates land in separate parts.
        warehouse.insert(result.table, [result.row])
        if refresher is not None:
            refresher.observe(result.table, [result.row])


@pytest.fixture
def loaded(warehouse: Warehouse, ctx: IngestContext) -> Warehouse:
    migrate(warehouse)
    refresher = DashboardRefresher() if warehouse.engine == "chdb" else None
    _store(warehouse, ctx, refresher)
    if refresher is not None:
        refresher.refresh(warehouse)
    return warehouse


# --- reading results the same way on both engines ------------------------------------------


def _norm(value: Any) -> Any:
    """chDB's JSON gives DateTime as text and Float32 as its shortest decimal; the driver
    gives datetimes and widened floats."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def _rows(warehouse: Warehouse, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(_norm(v) for v in row) for row in warehouse.query(sql).rows]


def _panels(warehouse: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for p in dashboard.PANELS:
        result = warehouse.query(p.sql(SINCE, UNTIL))
        assert tuple(result.columns) == p.columns, (warehouse.dialect, p.name)
        out[p.name] = [tuple(_norm(v) for v in row) for row in result.rows]
    return out


def _h(hour: int) -> str:
    return f"2026-11-20 {hour:02d}:00:00"


def _by_reports(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # ORDER BY reports DESC, then the text keys: ClickHouse compares UTF-8 bytes, which
    # order as Python's code points do.
    return sorted(rows, key=lambda r: (-r[-1], *r[:-1]))


EXPECTED = {
    # r1..r7 in [08:00, 10:00); r8 before, r9 at the (exclusive) end. Auto: r1, r2, r7.
    # Judged automatic: r1 (confirmed), r2 (corrected); f8 is outside, f8old unknown.
    # Due: automatic r1 (in time), r7 (in time); dispatchers' r3 (in time), r4 (late); r5
    # still waiting past its deadline. r6's deadline is ahead; r2 has none.
    "totals": [(7, 3, round(3 / 7, 6), 2, 1, 0.5, 5, 3, 0.6)],
    "volume_by_hour": [
        (_h(8), "app", 1),
        (_h(8), "hotline_12345", 2),
        (_h(9), "app", 1),
        (_h(9), "hotline_12345", 1),
        (_h(9), "web", 1),
        (_h(9), "wechat", 1),
    ],
    # r7 counts under both its codes: no model ('') first, then A01.
    "volume_by_type": _by_reports(
        [("A01", "暴露垃圾", 4), ("", "", 1), ("A02", "积存垃圾渣土", 1), ("B01", "非法小广告", 1),
         ("C01", "施工扰民", 1)]
    ),
    "volume_by_district": _by_reports(
        [("市南区", 2), ("崂山区", 2), ("市北区", 2), ("黄岛区", 1)]
    ),
    "hotspots": sorted(
        [("市南区", "A", 2), ("崂山区", "A", 1), ("崂山区", "B", 1), ("市北区", "A", 1),
         ("市北区", "C", 1), ("黄岛区", "", 1), ("黄岛区", "A", 1)]
    ),
    "quality_by_hour": [
        (_h(8), 3, 2, round(2 / 3, 6), 2, 1, 0.5),
        (_h(9), 4, 1, 0.25, 0, 0, None),
    ],
    "compliance_by_unit": [
        (U2, 2, 1, 0.5),
        (U1, 2, 2, 1.0),
        ("", 1, 0, 0.0),
    ],
    # 石老人: r3 (B01) and r4 (A01), a tie: the smaller code. 金沙滩: r7 once, though
    # stored under two codes. r5 names no place nor road: left out.
    "top_places": [("崂山区", "中韩街道", "石老人", 2, "A01")]
    + sorted(
        [
            ("市北区", "", "辽宁路", 1, "A02"),
            ("市南区", "香港中路街道", "五四广场", 1, "A01"),
            ("市南区", "香港中路街道", "香港中路", 1, "A01"),
            ("黄岛区", "", "金沙滩", 1, ""),
        ]
    ),
}


# --- tests ---------------------------------------------------------------------------------


def test_panels_give_the_exact_numbers(loaded: Warehouse) -> None:
    panels = _panels(loaded)
    for name, rows in EXPECTED.items():
        assert panels[name] == rows, (loaded.dialect, name)
    # The invariants the dashboard shows side by side.
    totals = panels["totals"][0]
    assert sum(r[1] for r in panels["compliance_by_unit"]) == totals[6]
    assert sum(r[2] for r in panels["compliance_by_unit"]) == totals[7]
    assert sum(r[1] for r in panels["quality_by_hour"]) == totals[0]
    assert sum(r[2] for r in panels["volume_by_hour"]) == totals[0]


def test_panel_types_match_on_both_engines(loaded: Warehouse) -> None:
    totals = loaded.query(dashboard.totals_sql(SINCE, UNTIL))
    types = dict(zip(totals.columns, totals.types, strict=True))
    assert types["auto_rate"] == "Float64"
    assert types["auto_accuracy"] == "Nullable(Float64)"
    assert types["compliance"] == "Nullable(Float64)"
    assert {types[c] for c in ("reports", "auto_dispatched", "due", "in_time")} == {"UInt64"}
    hourly = loaded.query(dashboard.volume_by_hour_sql(SINCE, UNTIL))
    assert hourly.types[0] == "DateTime"


def test_an_empty_window_gives_zeros_and_nulls(loaded: Warehouse) -> None:
    since, until = DAY + timedelta(days=2), DAY + timedelta(days=3)
    assert _rows(loaded, dashboard.totals_sql(since, until)) == [
        (0, 0, 0.0, 0, 0, None, 0, 0, None)
    ]
    for p in dashboard.PANELS[1:]:
        assert _rows(loaded, p.sql(since, until)) == [], p.name


def test_a_window_takes_the_hours_that_start_in_it(loaded: Warehouse) -> None:
    # Since 08:59 is floored to 08:00; until 09:00 leaves out the 09:00 bucket.
    rows = _rows(loaded, dashboard.volume_by_district_sql(_at(8, 59), _at(9)))
    assert rows == [("市南区", 2), ("崂山区", 1)]
    assert _rows(loaded, dashboard.totals_sql(_at(7), _at(8)))[0][:2] == (1, 1)  # r8
    # 10:00 has r9; 11:00 only f9old, which does not say how r9 was decided: no row.
    assert _rows(loaded, dashboard.quality_by_hour_sql(_at(10), _at(12))) == [
        (_h(10), 1, 1, 1.0, 0, 0, None)
    ]


def test_review_queue(loaded: Warehouse) -> None:
    result = loaded.query(dashboard.review_queue_sql(NOW, 50))
    assert tuple(result.columns) == dashboard.REVIEW_COLUMNS
    rows = [dict(zip(result.columns, (_norm(v) for v in r), strict=True)) for r in result.rows]
    # r3, r4 have verdicts; r7 was decided automatically after its review; r5 first (its
    # deadline is nearest).
    assert [r["input_id"] for r in rows] == ["r5", "r6"]
    assert rows[0] == {
        "input_id": "r5",
        "received_at": "2026-11-20 09:15:00",
        "respond_by": "2026-11-20 09:45:00",
        "decided_at": "2026-11-20 09:15:02",
        "code": "C01",
        "event_name": "施工扰民",
        "urgency": "normal",
        "unit": "",
        "district": "市北区",
        "street": "",
        "channel": "hotline_12345",
        "text": "r5 的诉求原文",
        "confidence": 0.4,
        "review_reasons": ["street_unknown", "low_confidence"],
        "alt_units": [U1, "S"],
        "alt_codes": ["C01", "C02"],
        "alt_confidences": [0.25, 0.125],
    }
    assert rows[1]["respond_by"] == "2100-01-01 00:00:00"
    assert _rows(loaded, dashboard.review_queue_sql(NOW, 1)) == [
        tuple(rows[0].values())
    ]


def test_board_counts(loaded: Warehouse) -> None:
    result = loaded.query(dashboard.board_counts_sql(NOW))
    assert tuple(result.columns) == dashboard.COUNT_COLUMNS
    assert set(result.types) == {"UInt64"}
    # Decided in (09:10, 10:10]: r4 (09:10:03), r5, r6, r7 (twice: once), r9; of them
    # automatically (latest or any decision): r7, r9. Waiting: r5, r6; overdue: r5.
    # Verdicts in the hour: f2 (f4 comes at 10:30).
    assert [tuple(r) for r in result.rows] == [(5, 2, 2, 1, 1)]


def test_recent_decisions(loaded: Warehouse) -> None:
    result = loaded.query(dashboard.recent_decisions_sql(_at(9, 10), 50))
    assert tuple(result.columns) == dashboard.RECENT_COLUMNS
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    # Newest first, each report once with its latest decision.
    assert [r["input_id"] for r in rows] == ["r9", "r7", "r6", "r5", "r4"]
    r7 = rows[1]
    assert (r7["auto"], r7["code"], _norm(r7["decided_at"])) == (1, "A01", "2026-11-20 09:55:00")
    assert [r[0] for r in _rows(loaded, dashboard.recent_decisions_sql(_at(9, 10), 2))] == [
        "r9",
        "r7",
    ]
    # r1 was stored twice; it shows once.
    assert [r[0] for r in _rows(loaded, dashboard.recent_decisions_sql(_at(8), 50))].count(
        "r1"
    ) == 1


def test_recently_handled(loaded: Warehouse) -> None:
    result = loaded.query(dashboard.recently_handled_sql(_at(8), 50))
    assert tuple(result.columns) == dashboard.HANDLED_COLUMNS
    rows = [tuple(_norm(v) for v in r) for r in result.rows]
    assert rows == [
        ("r9", "confirmed", U2, U2, "d7", "2026-11-20 11:05:00"),
        ("r4", "corrected", U2, U1, "d7", "2026-11-20 10:30:00"),
        ("r2", "corrected", U2, U1, "d7", "2026-11-20 09:20:00"),
        ("r3", "confirmed", U2, U2, "d7", "2026-11-20 09:00:00"),
        ("r1", "confirmed", U1, U1, "d7", "2026-11-20 08:30:00"),  # stored twice
        ("r8", "corrected", U2, "", "d7", "2026-11-20 08:10:00"),
    ]


def _backfills(dialect: str) -> list[str]:
    migration = next(m for m in discover(dialect) if m.name == "dashboard")  # type: ignore[arg-type]
    return [s for s in migration.statements() if s.startswith("INSERT INTO")]


def test_backfill_and_reruns_do_not_double_count(loaded: Warehouse, tmp_path: Path) -> None:
    before = _panels(loaded)
    assert before["totals"] == EXPECTED["totals"]
    board = _rows(loaded, dashboard.review_queue_sql(NOW, 50))

    # The backfill run again over what the views already hold.
    for statement in _backfills(loaded.dialect):
        loaded.command(statement)
    assert _panels(loaded) == before

    # The backfill alone rebuilds the tables from the logs, once and twice. It sees what
    # the logs hold: once merged, r7's first decision (no code, sent to review) is gone,
    # where the views had counted both (made deterministic here by merging first).
    for log in ("dispatch_decisions_log", "dispatch_feedback_log"):
        loaded.command(f"OPTIMIZE TABLE {log} FINAL")
    for table in AGGREGATES:
        loaded.command(f"TRUNCATE TABLE {table}")
    assert _panels(loaded)["totals"] == [(0, 0, 0.0, 0, 0, None, 0, 0, None)]
    merged = dict(before)
    merged["volume_by_type"] = [r for r in before["volume_by_type"] if r[0] != ""]
    merged["hotspots"] = [r for r in before["hotspots"] if r != ("黄岛区", "", 1)]
    merged["top_places"] = [
        (*r[:4], "A01") if r[2] == "金沙滩" else r for r in before["top_places"]
    ]
    assert merged != before
    for _ in range(2):
        for statement in _backfills(loaded.dialect):
            loaded.command(statement)
        assert _panels(loaded) == merged
        assert _rows(loaded, dashboard.review_queue_sql(NOW, 50)) == board

    # The whole migration again, as after a run that died before recording it (on 18.16
    # the runner skips the columns already added).
    again = tmp_path / "again"
    again.mkdir()
    for variant in MIGRATIONS_DIR.glob("0003_dashboard*.sql"):
        shutil.copy(variant, again / variant.name.replace("0003_", "0099_"))
    assert [m.version for m in migrate(loaded, again)] == [99]
    assert _panels(loaded) == merged
    described = [r[0] for r in loaded.query("DESCRIBE TABLE dispatch_decisions").rows]
    assert described.count("respond_by") == 1


def test_a_decision_stored_twice_is_one_review_item(loaded: Warehouse) -> None:
    ids = [r[0] for r in _rows(loaded, "SELECT input_id FROM review_items FINAL ORDER BY input_id")]
    assert ids == ["r3", "r4", "r5", "r6", "r7"]
    # A decision sent without a deadline gets the row builder's fallback: its receipt time.
    row = _rows(
        loaded, "SELECT respond_by, received_at FROM dispatch_decisions WHERE input_id = 'r2'"
    )
    assert row == [("2026-11-20 08:20:00", "2026-11-20 08:20:00")]


@pytest.mark.parametrize(
    "text", ["x' OR 1=1 --", "a\\' OR '1", "市南区\\", "'; DROP TABLE review_items; --"]
)
def test_escaped_strings_come_back_unchanged(warehouse: Warehouse, text: str) -> None:
    assert _rows(warehouse, f"SELECT {dashboard.sql_string(text)} AS s") == [(text,)]
