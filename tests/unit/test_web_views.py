"""The pages' documents, shaped from query rows without any I/O."""

from datetime import UTC, datetime, timedelta

import pytest

from models.simulator.feedback import StoredDecision, units_feedback
from processors.dispatch_rule import all_units, route_of_unit
from streams.clickhouse import QueryResult
from web.views import (
    RequestRefused,
    board_payload,
    cell,
    city_labels,
    city_payload,
    city_window,
    feedback_from_request,
    review_item,
    safe_next,
    to_utc,
)

NOW = datetime(2026, 11, 26, 4, 30, tzinfo=UTC)


def test_clickhouse_times_from_either_engine_are_utc():
    assert to_utc("2026-11-26 03:00:00") == datetime(2026, 11, 26, 3, tzinfo=UTC)
    assert to_utc(datetime(2026, 11, 26, 3)) == datetime(2026, 11, 26, 3, tzinfo=UTC)
    assert to_utc("2026-11-26T11:00:00+08:00") == datetime(2026, 11, 26, 3, tzinfo=UTC)
    assert to_utc("") is None and to_utc(None) is None
    assert cell(float("nan")) is None and cell([1.0, float("inf")]) == [1.0, None]
    assert cell(datetime(2026, 11, 26, 3)) == "2026-11-26T03:00:00+00:00"


def _queue_row(input_id, respond_by, **kw):
    row = {
        "input_id": input_id, "received_at": "2026-11-26 04:00:00", "respond_by": respond_by,
        "decided_at": "2026-11-26 04:00:01", "code": "A01", "event_name": "暴露垃圾",
        "urgency": "normal", "unit": "八大关街道办事处", "district": "市南区",
        "street": "八大关街道", "channel": "hotline_12345", "text": "垃圾三天没人管",
        "confidence": 0.61, "review_reasons": ["low_confidence"],
        "alt_units": ["市南区环境卫生服务中心", "市南区城市管理局"], "alt_codes": ["A01", "A06"],
        "alt_confidences": [0.2, 0.1],
    }
    return row | kw


def test_review_item_is_overdue_past_its_response_time():
    late = review_item(_queue_row("r-1", "2026-11-26 04:18:00"), NOW)
    assert late["overdue"] is True and late["minutes_left"] == -12.0
    soon = review_item(_queue_row("r-2", "2026-11-26 05:00:00"), NOW)
    assert soon["overdue"] is False and soon["minutes_left"] == 30.0
    assert soon["alternatives"] == [
        {"unit": "市南区环境卫生服务中心", "code": "A01", "confidence": 0.2},
        {"unit": "市南区城市管理局", "code": "A06", "confidence": 0.1},
    ]


def test_board_puts_the_most_pressing_first_and_counts_as_ints():
    columns = list(_queue_row("x", "y"))
    queue = QueryResult(columns, [], [
        tuple(_queue_row("later", "2026-11-26 08:00:00").values()),
        tuple(_queue_row("late", "2026-11-26 04:00:00").values()),
        tuple(_queue_row("soon", "2026-11-26 04:40:00").values()),
    ])
    counts = QueryResult(["review_waiting", "review_overdue"], [], [("3", 1)])
    recent = QueryResult(["input_id", "auto", "decided_at"], [], [("e1", 1, "2026-11-26 04:29:00")])
    doc = board_payload(now=NOW, counts=counts, queue=queue, recent=recent,
                        handled=QueryResult([], [], []), units=("a", "b"))
    assert [i["input_id"] for i in doc["review_queue"]] == ["late", "soon", "later"]
    assert doc["counts"] == {"review_waiting": 3, "review_overdue": 1}
    assert doc["recent"] == [
        {"input_id": "e1", "auto": True, "decided_at": "2026-11-26 04:29:00"}
    ]
    assert doc["units"] == ["a", "b"]


def test_city_window_is_whole_hours_and_only_the_offered_spans():
    window = city_window("168", NOW)
    assert window.until == datetime(2026, 11, 26, 5, tzinfo=UTC)
    assert window.until - window.since == timedelta(hours=168)
    assert city_window(None, NOW).hours == 24
    for bad in ("5", "abc", "-24", "24; DROP TABLE x"):
        with pytest.raises(RequestRefused):
            city_window(bad, NOW)


def test_city_payload_labels_classes_and_makes_nan_null(domain):
    labels = city_labels(domain)
    assert labels["event_classes"]["A"] == "市容环境"
    assert labels["channels"]["hotline_12345"] == "12345热线"
    window = city_window("24", NOW)
    doc = city_payload(window, {"totals": QueryResult(["reports", "auto_accuracy"], [],
                                                      [(10, float("nan"))])}, labels)
    assert doc["panels"]["totals"] == {"columns": ["reports", "auto_accuracy"],
                                       "rows": [[10, None]]}
    assert doc["range"]["hours"] == 24


DECISION = {"input_id": "r-1", "unit": "八大关街道办事处", "code": "A01", "auto": 0,
            "received_at": "2026-11-26 04:00:00", "respond_by": "2026-11-27 04:00:00"}


def _feedback(body, decision=DECISION, units=frozenset({"八大关街道办事处", "市南区城市管理局"})):
    return feedback_from_request(body, decision, dispatcher="li.na", units=units,
                                 feedback_id="fb-1", now=NOW)


def test_feedback_carries_the_decisions_facts():
    fb = _feedback({"input_id": "r-1", "verdict": "corrected", "unit": "市南区城市管理局"})
    assert (fb.verdict, fb.unit, fb.decided_unit, fb.auto, fb.dispatcher_id, fb.code) == (
        "corrected", "市南区城市管理局", "八大关街道办事处", False, "li.na", "A01")
    assert fb.respond_by == datetime(2026, 11, 27, 4, tzinfo=UTC)
    assert fb.given_at == NOW


@pytest.mark.parametrize(
    ("body", "decision", "status", "message"),
    [
        ([1, 2], DECISION, 400, "JSON object"),
        ({"verdict": "maybe", "unit": "八大关街道办事处"}, DECISION, 400, "verdict"),
        ({"input_id": "zz", "verdict": "confirmed", "unit": "八大关街道办事处"}, None, 404, "zz"),
        ({"verdict": "corrected", "unit": "不存在的单位"}, DECISION, 400, "unknown unit"),
        ({"verdict": "confirmed", "unit": "市南区城市管理局"}, DECISION, 400, "corrected"),
        ({"verdict": "corrected", "unit": "市南区城市管理局", "code": "'; DROP"}, DECISION, 400,
         "A01"),
    ],
)
def test_feedback_refusals_say_why(body, decision, status, message):
    with pytest.raises(RequestRefused, match=message) as caught:
        _feedback(body, decision)
    assert caught.value.status == status


def test_sign_in_redirects_stay_on_this_site():
    assert safe_next("/city?hours=24") == "/city?hours=24"
    for hostile in ("https://evil.example", "//evil.example", "/\\evil", "", None):
        assert safe_next(hostile) == "/board"


def test_every_unit_a_dispatcher_can_choose_is_one_the_rule_knows(domain):
    units = all_units(domain)
    assert len(units) == len(set(units))
    assert all(route_of_unit(domain, u) is not None for u in units)
    assert "市南区城市管理局" in units and "八大关街道办事处" in units


def _stored(input_id, unit, auto, received=NOW - timedelta(hours=2), due_minutes=60):
    return StoredDecision(input_id, unit, "A01", auto, received,
                          received + timedelta(minutes=due_minutes), received)


def test_units_accept_right_orders_and_return_wrong_ones():
    truth = {"a": {"unit": "U1", "code": "A01"}, "b": {"unit": "U2", "code": "A01"}}
    decisions = [_stored("a", "U1", True), _stored("b", "U1", True), _stored("c", "U1", True)]
    verdicts = {v.input_id: v for v in units_feedback(decisions, truth, now=NOW)}
    assert set(verdicts) == {"a", "b"}  # no truth, no verdict
    assert (verdicts["a"].verdict, verdicts["a"].unit) == ("confirmed", "U1")
    assert (verdicts["b"].verdict, verdicts["b"].unit, verdicts["b"].decided_unit) == (
        "corrected", "U2", "U1")
    assert all(v.given_at <= NOW and v.feedback_id == f"sim-{v.input_id}"
               for v in verdicts.values())


def test_simulated_dispatcher_handles_a_share_of_the_queue_some_late():
    truth = {f"r{i}": {"unit": "U1", "code": "A01"} for i in range(400)}
    decisions = [_stored(f"r{i}", "U1", False) for i in range(400)]
    verdicts = units_feedback(decisions, truth, now=NOW, review_share=0.5)
    assert 150 < len(verdicts) < 250
    late = sum(v.given_at > v.respond_by for v in verdicts)
    assert 0 < late < len(verdicts) / 2
    assert verdicts == units_feedback(decisions, truth, now=NOW, review_share=0.5)  # seeded


def test_sign_in_throttle_locks_a_name_for_its_window_and_stays_bounded():
    from web.server import SignInThrottle

    throttle = SignInThrottle(limit=3, window=timedelta(minutes=15), max_names=5)
    for minute in range(3):
        assert not throttle.blocked("li.na", NOW + timedelta(minutes=minute))
        throttle.failed("li.na", NOW + timedelta(minutes=minute))
    assert throttle.blocked("li.na", NOW + timedelta(minutes=3))
    assert not throttle.blocked("wang.fang", NOW + timedelta(minutes=3))  # per name
    assert not throttle.blocked("li.na", NOW + timedelta(minutes=17))  # window passed
    throttle.succeeded("li.na")
    for i in range(50):  # made-up names, an hour apart: the stale ones are forgotten
        throttle.failed(f"guess{i}", NOW + timedelta(hours=i))
    assert len(throttle.failures) <= 6


# ------------------------------------------------------------------ similar past cases


def test_similar_params_take_a_report_id_and_k_within_bounds():
    from web.views import SIMILAR_DEFAULT_K, SIMILAR_MAX_K, similar_params

    assert similar_params("AP-7", None) == ("AP-7", SIMILAR_DEFAULT_K) == ("AP-7", 5)
    assert similar_params("w1-ev:00012.a_b", "") == ("w1-ev:00012.a_b", 5)
    assert similar_params("AP-7", "1") == ("AP-7", 1)
    assert similar_params("AP-7", str(SIMILAR_MAX_K)) == ("AP-7", 20)
    for bad_id in (None, "", "a b", "x'; DROP TABLE y", "AP-7\n", "a" * 65, "路"):
        with pytest.raises(RequestRefused, match="input_id must be a report id") as refused:
            similar_params(bad_id, "5")
        assert refused.value.status == 400
    for bad_k in ("0", "21", "-1", "5.0", "five", " 5", "5\n", "1e1", "0x5", "1000"):
        with pytest.raises(RequestRefused, match="k must be a whole number from 1 to 20"):
            similar_params("AP-7", bad_k)


def _stored_row(**kw):
    """A row of stored_embedding_sql as chDB's JSON gives it (the server gives datetimes)."""
    row = {"case_id": "c-9", "input_id": "AP-7", "code": "A01", "district": "市南区",
           "reported_at": "2026-03-10 01:30:00", "embedding": [0.6, 0.8, 0.0, 0.0]}
    row |= kw
    return QueryResult(list(row), ["String"] * 6, [tuple(row.values())])


def test_similar_search_is_the_reports_own_filters_and_vector():
    from processors.similar import SearchFilters, similar_cases_sql
    from web.views import similar_search_sql

    sql = similar_search_sql(_stored_row(), "AP-7", 7)
    # Same code, same district, the year before the report, not its own case.
    expected = SearchFilters(code="A01", district="市南区", since=datetime(2025, 3, 10, 1, 30),
                             until=datetime(2026, 3, 10, 1, 30), exclude_case_id="c-9")
    assert sql == similar_cases_sql([0.6, 0.8, 0.0, 0.0], expected, 7, dims=4, with_text=True)
    assert "code = 'A01'" in sql and "district = '市南区'" in sql
    assert "case_id != 'c-9'" in sql and "LIMIT 7)" in sql and "length(embedding) = 4" in sql
    # The server's row form; an unclassified code and an unresolved district: no filter.
    loose = similar_search_sql(
        _stored_row(code="", district="", reported_at=datetime(2026, 3, 10, 1, 30)), "AP-7", 5)
    assert loose == similar_cases_sql(
        [0.6, 0.8, 0.0, 0.0],
        SearchFilters(since=datetime(2025, 3, 10, 1, 30), until=datetime(2026, 3, 10, 1, 30),
                      exclude_case_id="c-9"),
        5, dims=4, with_text=True)
    assert "code = " not in loose and "district = " not in loose


def test_similar_search_without_a_stored_embedding_is_404():
    from web.views import similar_search_sql

    empty = QueryResult(["case_id"], ["String"], [])
    with pytest.raises(RequestRefused, match="no stored embedding for report 'AP-7'") as missing:
        similar_search_sql(empty, "AP-7", 5)
    assert missing.value.status == 404
    with pytest.raises(RequestRefused, match="cannot be searched") as broken:
        similar_search_sql(_stored_row(embedding=[0.1, float("nan")]), "AP-7", 5)
    assert broken.value.status == 500


def test_similar_payload_shapes_past_cases_for_the_board():
    from processors.similar import past_cases_from_rows
    from web.views import similar_payload

    long_text = "市南区香港中路  垃圾桶满了\n三天没人清理，" + "气味很大" * 30
    rows = [
        # chDB's form (times as text), with a verdict and the text column
        ("c3", "p4", "A01", "暴露垃圾", "市南区", "U3", "confirmed", "2026-03-03 09:00:00",
         2.5, 0.97123456, long_text),
        # the server's form (datetimes), no verdict yet
        ("p2", "p2", "A01", "暴露垃圾", "市南区", "U2", "", datetime(2026, 3, 5, 8, 0),
         None, 0.95, "短"),
    ]
    doc = similar_payload("AP-7", past_cases_from_rows(rows))
    assert doc == {"input_id": "AP-7", "cases": [
        {"case_id": "c3", "input_id": "p4", "code": "A01", "event_name": "暴露垃圾",
         "district": "市南区", "unit": "U3", "verdict": "confirmed",
         "reported_at": "2026-03-03T09:00:00+00:00", "hours_to_verdict": 2.5,
         "score": 0.9712,
         "text": ("市南区香港中路 垃圾桶满了 三天没人清理，" + "气味很大" * 30)[:80]},
        {"case_id": "p2", "input_id": "p2", "code": "A01", "event_name": "暴露垃圾",
         "district": "市南区", "unit": "U2", "verdict": "", "reported_at":
         "2026-03-05T08:00:00+00:00", "hours_to_verdict": None, "score": 0.95, "text": "短"},
    ]}
    assert len(doc["cases"][0]["text"]) == 80
    # Rows without the text column (an older query): no text key at all.
    bare = similar_payload("AP-7", past_cases_from_rows([rows[1][:10]]))
    assert "text" not in bare["cases"][0]
    assert similar_payload("AP-7", []) == {"input_id": "AP-7", "cases": []}


def test_snapshots_are_served_only_from_the_store(tmp_path):
    from web.views import RequestRefused, snapshot_file, snapshot_sql

    store = tmp_path / "snapshots"
    (store / "cam-1").mkdir(parents=True)
    shot = store / "cam-1" / "cam-1-1.jpg"
    shot.write_bytes(b"\xff\xd8")
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8")
    (store / "cam-1" / "notes.txt").write_text("x")
    assert snapshot_file(shot.as_uri(), store) == shot.resolve()
    for uri in ((tmp_path / "secret.jpg").as_uri(),
                (store / "cam-1" / ".." / ".." / "secret.jpg").as_uri(),
                (store / "cam-1" / "notes.txt").as_uri(), (store / "gone.jpg").as_uri(),
                "s3://bucket/cam-1-1.jpg", "/etc/passwd"):
        with pytest.raises(RequestRefused) as err:
            snapshot_file(uri, store)
        assert err.value.status == 404, uri
    assert "event_id = 'v-cam-1-ab12'" in snapshot_sql("v-cam-1-ab12")
    for bad in (None, "", "x' OR '1'='1", "a" * 65):
        with pytest.raises(RequestRefused):
            snapshot_sql(bad)
