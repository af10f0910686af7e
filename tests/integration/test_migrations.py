"""The migration runner on both engines: chDB in-process and the real clickhouse-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.services import ClickHouseServer
from schemas.migrations import MigrationError, discover, migrate
from streams.clickhouse import ChdbWarehouse, ServerWarehouse, Warehouse

pytestmark = pytest.mark.integration

TABLES = {
    "city_events_log",
    "citizen_appeals_log",
    "video_frames_log",
    "dead_letters_log",
    "city_events",
    "citizen_appeals",
    "video_frames",
    "dead_letters",
    "schema_migrations",
    "dispatch_decisions_log",
    "dispatch_feedback_log",
    "dispatch_decisions",
    "dispatch_feedback",
    "dispatch_outcomes",
    "dispatch_quality",
    # 0003: the dashboards' aggregate tables, the board's queue (and FEEDING_VIEWS).
    "dashboard_reports_hourly",
    "dashboard_places_hourly",
    "dashboard_feedback_hourly",
    "review_items",
    "reports_hourly",
    "places_hourly",
    "feedback_hourly",
    # 0004: the admin-only raw appeals, the model audit.
    "citizen_appeals_raw_log",
    "model_audit_log",
    "model_audit",
    # 0006: similar past cases.
    "case_embeddings_log",
    "case_embeddings",
}
# 0003's materialized views keep its tables on a server; on chDB 0007 replaces them by the
# worker's refresh and its watermark.
FEEDING_VIEWS = {
    "dashboard_reports_hourly_mv",
    "dashboard_places_hourly_mv",
    "dashboard_feedback_hourly_mv",
    "review_items_mv",
}


@pytest.fixture(scope="session")
def chdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB allows one data path per process: every in-process test shares this one.
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(params=["chdb", "server"])
def warehouse(request: pytest.FixtureRequest, chdb_root: Path, unique: str) -> Warehouse:
    if request.param == "chdb":
        wh: Warehouse = ChdbWarehouse(chdb_root, f"m_{unique}")
    else:
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        wh = ServerWarehouse(server.url, f"m_{unique}")
    yield wh
    wh.close()


def test_migrate_is_idempotent_and_recorded(warehouse: Warehouse) -> None:
    first = migrate(warehouse)
    assert [m.version for m in first] == [m.version for m in discover(warehouse.dialect)]
    assert migrate(warehouse) == []
    names = {r[0] for r in warehouse.query("SHOW TABLES").rows}
    assert TABLES <= names
    if warehouse.engine == "chdb":
        assert not FEEDING_VIEWS & names
        assert "dashboard_refresh_state" in names
    else:
        assert FEEDING_VIEWS <= names
        assert "dashboard_refresh_state" not in names
    recorded = warehouse.query("SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [(int(v), c) for v, c in recorded.rows] == [(m.version, m.checksum) for m in first]


def test_views_read_each_record_once(warehouse: Warehouse) -> None:
    from datetime import datetime

    migrate(warehouse)
    row = {
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 7,
        "error_kind": "x",
        "reason": "r",
        "original_b64": "",
        "key_b64": "",
        "processor": "p",
        "failed_at": datetime(2026, 11, 26, 1, 2, 3),
    }
    warehouse.insert("dead_letters_log", [row])
    warehouse.insert("dead_letters_log", [row])  # the re-delivery after a crash
    assert warehouse.query("SELECT count() FROM dead_letters").scalar() == 1


def test_edited_migration_is_refused(warehouse: Warehouse, tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text(
        "CREATE TABLE IF NOT EXISTS one (a UInt8) ENGINE = MergeTree() ORDER BY a;"
    )
    migrate(warehouse, tmp_path)
    (tmp_path / "0001_one.sql").write_text(
        "CREATE TABLE IF NOT EXISTS one (a UInt16) ENGINE = MergeTree() ORDER BY a;"
    )
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(warehouse, tmp_path)


def test_legacy_variant_is_chosen_for_old_servers(tmp_path: Path) -> None:
    (tmp_path / "0001_x.sql").write_text("SELECT 1")
    (tmp_path / "0001_x.legacy.sql").write_text("SELECT 2")
    assert discover("legacy", tmp_path)[0].sql == "SELECT 2"
    assert discover("modern", tmp_path)[0].sql == "SELECT 1"


def test_catalogue_matches_the_views(warehouse: Warehouse) -> None:
    """Each view's real columns are exactly the described ones, on chDB and on 18.16."""
    from schemas.catalogue import CATALOGUE

    migrate(warehouse)
    for view in CATALOGUE:
        columns = [r[0] for r in warehouse.query(f"DESCRIBE TABLE {view.name}").rows]
        assert columns == list(view.columns), (warehouse.dialect, view.name)


def test_query_limits_hold_on_both_engines(warehouse: Warehouse) -> None:
    """The analysts' row limit, as chDB's SETTINGS clause and as the driver's settings."""
    from streams.query import cut, query_limits

    sql = "SELECT number FROM system.numbers LIMIT 200000"
    limits = query_limits(sql, 100, 5)
    result, truncated = cut(warehouse.query(sql, limits), 100)
    assert truncated and len(result.rows) == 100
    small = "SELECT number FROM system.numbers LIMIT 40"
    result, truncated = cut(warehouse.query(small, query_limits(small, 100, 5)), 100)
    assert not truncated and len(result.rows) == 40


def test_dashboard_migration_backfills_what_was_stored_before(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    """0003 on a warehouse already holding decisions and verdicts (stored without the new
    columns): the columns get their defaults and the new tables hold the old rows."""
    import shutil
    from datetime import datetime

    from schemas.migrations import MIGRATIONS_DIR

    before = tmp_path / "before"
    before.mkdir()
    for sql in MIGRATIONS_DIR.glob("000[12]_*.sql"):
        shutil.copy(sql, before / sql.name)
    assert [m.version for m in migrate(warehouse, before)] == [1, 2]
    received = datetime(2026, 11, 20, 8, 15)
    old_decision = {
        "input_id": "old-1", "input_kind": "citizen_appeal", "code": "A01",
        "event_name": "暴露垃圾", "urgency": "normal", "route": "S", "unit": "u",
        "district": "市南区", "street": "", "location_type": "", "confidence": 0.4,
        "auto": 0, "review_reasons": ["low_confidence"], "alt_units": [], "alt_codes": [],
        "alt_confidences": [], "unresolved": [], "model_versions": "{}", "backend": "x",
        "queue_ms": 0.0, "address_ms": 0.0, "features_ms": 0.0, "inference_ms": 0.0,
        "decide_ms": 0.0, "total_ms": 0.0, "received_at": received,
        "decided_at": datetime(2026, 11, 20, 8, 15, 2), "decided_at_ms": 1,
        "kafka_topic": "t", "kafka_partition": 0, "kafka_offset": 1,
    }
    warehouse.insert("dispatch_decisions_log", [old_decision])
    warehouse.insert("dispatch_decisions_log", [{**old_decision, "input_id": "old-2", "auto": 1}])
    warehouse.insert("dispatch_feedback_log", [{
        "feedback_id": "f-old", "input_id": "old-1", "verdict": "confirmed", "unit": "u",
        "code": "", "dispatcher_id": "d", "given_at": datetime(2026, 11, 20, 9, 5),
        "kafka_topic": "t", "kafka_partition": 0, "kafka_offset": 2,
    }])

    # 3 and 4 first; later migrations (cases, case embeddings, ...) add what they add.
    assert [m.version for m in migrate(warehouse)][:2] == [3, 4]

    def rows(sql: str) -> list[tuple[object, ...]]:
        return [
            tuple(v.strftime("%F %T") if isinstance(v, datetime) else v for v in r)
            for r in warehouse.query(sql).rows
        ]

    # No deadline was kept: the receipt time (so they count as late), no channel or text.
    assert rows(
        "SELECT input_id, respond_by, channel, text, place FROM dispatch_decisions "
        "ORDER BY input_id"
    ) == [
        ("old-1", "2026-11-20 08:15:00", "", "", ""),
        ("old-2", "2026-11-20 08:15:00", "", "", ""),
    ]
    assert rows(
        "SELECT hour, district, reports, auto_dispatched, auto_in_time FROM reports_hourly"
    ) == [("2026-11-20 08:00:00", "市南区", 2, 1, 0)]
    # The verdict did not say how its decision was made, nor when the report came.
    assert rows("SELECT hour, unit, decision, judged, confirmed FROM feedback_hourly") == [
        ("2026-11-20 09:00:00", "u", -1, 1, 1)
    ]
    assert rows("SELECT input_id, respond_by FROM review_items FINAL") == [
        ("old-1", "2026-11-20 08:15:00")
    ]
    assert rows("SELECT auto, decided_unit, received_at FROM dispatch_feedback") == [
        (None, "", None)
    ]


def test_analysts_sql_runs_as_the_read_only_user(
    clickhouse_server: ClickHouseServer, unique: str
) -> None:
    """CITYSTREAM_CLICKHOUSE_ANALYST_USER: reads go through; writes and DDL are refused by
    the server itself (profile readonly=2), not only by the app's guard."""
    from streams.clickhouse import WarehouseError, open_analyst_warehouse
    from streams.settings import Settings

    settings = Settings(clickhouse_url=clickhouse_server.url,
                        clickhouse_database=f"a_{unique}", clickhouse_analyst_user="analyst")
    writer = ServerWarehouse(clickhouse_server.url, settings.clickhouse_database)
    migrate(writer)
    writer.insert("dispatch_feedback_log", [{"feedback_id": "f", "input_id": "i"}])
    analyst = open_analyst_warehouse(settings)
    assert analyst is not None
    try:
        # The analyst profile's readonly=2 is in force on this connection.
        assert analyst.query(
            "SELECT value FROM system.settings WHERE name = 'readonly'").scalar() == "2"
        assert analyst.query("SELECT count() FROM dispatch_feedback").scalar() == 1
        with pytest.raises(WarehouseError, match="(?i)readonly"):
            analyst.insert("dispatch_feedback_log", [{"feedback_id": "x", "input_id": "y"}])
        with pytest.raises(WarehouseError, match="(?i)readonly"):
            analyst.command("DROP TABLE dispatch_feedback_log")
    finally:
        analyst.close()
        writer.close()
    assert open_analyst_warehouse(Settings()) is None  # embedded: the app's limits only
