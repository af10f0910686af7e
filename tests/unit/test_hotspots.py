"""Hotspots from per-place case counts, and the stage's ordering and rebuild helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.case_stage import DecisionMessage, Rebuilt, link_order, lookback
from processors.hotspots import PlaceDay, hotspot_alerts, hotspot_counts_sql, new_alerts
from processors.merge import HotspotRule
from processors.merge_batch import batch_policy

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)  # 12:00 in Qingdao
TODAY = (NOW + timedelta(hours=8)).date()
DAY0 = (TODAY - datetime(1970, 1, 1).date()).days


def row(place: str, days_ago: int, cases: int, ids: tuple[str, ...] = ()) -> PlaceDay:
    return PlaceDay("市南区", "name", place, DAY0 - days_ago, cases, ids or (f"c{days_ago}",))


def test_a_place_with_enough_cases_in_the_window_is_raised_once_per_day():
    rows = [row("海韵花园", 0, 1), row("海韵花园", 2, 1), row("海韵花园", 6, 1),
            row("台东", 0, 2), row("台东", 7, 5)]  # fmt: skip
    (alert,) = hotspot_alerts(rows, NOW, HotspotRule(min_cases=3, days=7))
    assert (alert.place, alert.district, alert.cases) == ("海韵花园", "市南区", 3)
    assert alert.hotspot_id == f"市南区|海韵花园|{TODAY.isoformat()}"
    assert alert.first_day == (TODAY - timedelta(days=6)).isoformat()
    assert alert.last_day == TODAY.isoformat()
    assert alert.case_ids == ("c0", "c2", "c6")
    assert alert.place_level == "name"


def test_an_alert_is_raised_again_only_with_more_cases():
    (alert,) = hotspot_alerts([row("海韵花园", 0, 3)], NOW)
    assert new_alerts([alert], {}) == [alert]
    assert new_alerts([alert], {alert.hotspot_id: 3}) == []
    (more,) = hotspot_alerts([row("海韵花园", 0, 4)], NOW)
    assert new_alerts([more], {alert.hotspot_id: 3}) == [more]


def test_counting_sql_uses_local_days_and_quotes_levels():
    sql = hotspot_counts_sql(HotspotRule(min_cases=3, days=7), NOW)
    assert "intDiv(toUInt32(first_reported) + 28800, 86400)" in sql
    assert "place_level IN ('crossing', 'name', 'number')" in sql
    # The window starts at local midnight six days before today.
    start = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC) - timedelta(days=6, hours=8)
    assert f"toDateTime({int(start.timestamp())})" in sql


def test_link_order_is_by_broker_time_then_topic_partition_offset():
    msgs = [DecisionMessage("review", 0, 5, 100, b""), DecisionMessage("orders", 1, 9, 100, b""),
            DecisionMessage("orders", 0, 3, 50, b""), DecisionMessage("orders", 0, 2, 100, b"")]
    assert [(m.topic, m.offset) for m in link_order(msgs)] == [
        ("orders", 3), ("orders", 2), ("orders", 9), ("review", 5)
    ]


def test_rebuilt_skips_what_the_rebuild_already_fed():
    done = Rebuilt({("orders", 0): 10}, 10)
    msgs = [DecisionMessage("orders", 0, 9, 1, b""), DecisionMessage("orders", 0, 10, 2, b""),
            DecisionMessage("orders", 1, 0, 3, b"")]
    assert [(m.partition, m.offset) for m in done.fresh(msgs)] == [(0, 10), (1, 0)]


def test_lookback_covers_the_longest_case(domain):
    policy = batch_policy(domain)
    longest = max(c.max_span for c in policy.classes)
    assert lookback(policy) == longest + policy.grace == timedelta(hours=50)
