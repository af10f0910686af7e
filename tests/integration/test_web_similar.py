"""Similar past cases on the dispatch board: GET /api/similar and the board's 相似案例
toggle, served by a real worker over a replayed stream (real Kafka, the trained dispatch
models) that stores into the session's clickhouse-server 18.16.

The worker holds its chDB, so a test cannot write into it; on a server the test can.
Embedding rows are written here with ``processors.similar.embedding_row``, as the worker
writes them: one for a report waiting on the board (the query), the others for made-up
past cases designed around it (same type and district within the year, and ones each
filter must leave out), with their verdicts. The worker's own embedding of decided reports
is switched off (when the setting exists), so these are the only rows searched."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from pipeline import isolated_settings, replay_records
from test_web import SCREENSHOTS, LiveStack, _signed_in_page, browser  # noqa: F401 - fixture

from infra.services import ClickHouseServer, KafkaBroker
from infra.worker_process import WorkerProcess
from processors.similar import EMBEDDINGS_LOG, embedding_row
from schemas.domain import Domain
from schemas.records import DispatchDecision
from streams.clickhouse import ServerWarehouse
from streams.kafka_admin import wait_for_zero_lag
from streams.query import api_token
from streams.sample import sample_records
from streams.settings import Settings
from streams.topics import cases_group, stored_groups

pytestmark = pytest.mark.integration

REPORTS = 200
DIMS = 64
SHANGHAI = timedelta(hours=8)


class SimilarStack(LiveStack):
    warehouse: ServerWarehouse

    def wait_stored(self, timeout_s: float = 120) -> None:
        """Inputs and decisions stored (the case stage, off here, has nothing to wait for)."""
        deadline = time.monotonic() + timeout_s
        skipped = cases_group(self.settings)
        try:
            for group, topics in stored_groups(self.settings).items():
                if group != skipped:
                    wait_for_zero_lag(self.settings, group, topics,
                                      max(deadline - time.monotonic(), 1.0))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.worker.log_tail(80)}") from exc


@pytest.fixture(scope="module")
def stack(
    kafka: KafkaBroker,
    clickhouse_server: ClickHouseServer,
    trained_models: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SimilarStack]:
    unique = uuid.uuid4().hex[:10]
    root = tmp_path_factory.mktemp("web-similar")
    # No case stage: it is what embeds decided reports, and only this test's rows are
    # to be searched here.
    update: dict[str, Any] = {"clickhouse_url": clickhouse_server.url, "cases_enabled": False}
    if "similar_cases_enabled" in Settings.model_fields:
        update["similar_cases_enabled"] = False
    settings = isolated_settings(kafka.bootstrap, root, unique, trained_models).model_copy(
        update=update
    )
    worker = WorkerProcess(settings, root / "worker.log")
    worker.start()
    run_id = f"s{unique[:6]}"
    records = list(sample_records(
        Domain.load(settings.domain_file), REPORTS, seed=11, run_id=run_id,
        span=timedelta(hours=20),
    ))
    replay_records(settings, records)
    live = SimilarStack(settings, worker, worker.ensure_accounts(), run_id)
    live.wait_stored()
    live.warehouse = ServerWarehouse(clickhouse_server.url, settings.clickhouse_database)
    yield live
    live.warehouse.close()
    worker.stop()


def _vector(cos: float) -> np.ndarray:
    """A unit vector at this cosine to the query's (which is the first axis)."""
    vector = np.zeros(DIMS, dtype=np.float32)
    vector[0], vector[1] = cos, np.sqrt(1.0 - cos * cos)
    return vector


def _decision(
    input_id: str,
    received: datetime,
    *,
    code: str,
    district: str | None,
    unit: str | None,
    event_name: str,
    text: str = "路边垃圾没人清理",
    decided_after: timedelta = timedelta(seconds=2),
) -> DispatchDecision:
    return DispatchDecision(
        kind="dispatch_decision", schema_version=1, input_id=input_id,
        input_kind="citizen_appeal", channel="hotline_12345", text=text, code=code,
        event_name=event_name, urgency="normal", route="S", unit=unit, district=district,
        confidence=0.9, auto=True, backend="onnxruntime",
        received_at=received.isoformat(),  # type: ignore[arg-type]
        decided_at=(received + decided_after).isoformat(),  # type: ignore[arg-type]
    )


def _verdict(fid: str, input_id: str, verdict: str, unit: str, at: datetime) -> dict[str, Any]:
    return {
        "feedback_id": fid, "input_id": input_id, "verdict": verdict, "unit": unit,
        "code": "", "dispatcher_id": "unit", "given_at": at.replace(tzinfo=None),
        "kafka_topic": "test", "kafka_partition": 0, "kafka_offset": 1,
    }


@pytest.fixture(scope="module")
def seeded(stack: SimilarStack) -> dict[str, Any]:
    """The query report (waiting on the board, classified, its district found), its stored
    embedding, and past cases around it; returns what the search must answer."""
    board = stack.client("dispatcher").get("/api/board").json()
    queue = board["review_queue"]
    query = next(i for i in queue
                 if i["district"] and re.fullmatch(r"[A-Z][0-9]{2}", i["code"]) and i["unit"])
    other = next(i for i in queue if i["input_id"] != query["input_id"])
    code, district = query["code"], query["district"]
    reported = datetime.fromisoformat(query["received_at"]).replace(microsecond=0)
    other_district = "市北区" if district != "市北区" else "市南区"
    other_code = "A02" if code != "A02" else "A03"
    run = stack.run_id
    long_text = "东海西路与香港中路路口 占道经营摊位越来越多，" + "晚上人多车多很危险" * 12
    # name, case, cosine to the query, reported, code, district, unit, event name, text
    past = [
        ("p1", None, 0.99, reported - timedelta(days=3), code, district, "U1",
         query["event_name"], "同一路段又有人乱倒垃圾"),
        ("p2", None, 0.95, reported - timedelta(days=5), code, district, "U2",
         query["event_name"], "小区门口垃圾堆积"),
        ("p3", "c3", 0.90, reported - timedelta(days=7), code, district, "U3",
         query["event_name"], "第一次反映"),
        ("p4", "c3", 0.97, reported - timedelta(days=7, hours=-1), code, district, "U3",
         query["event_name"], "同一问题再次反映"),
        ("p5", None, 0.999, reported - timedelta(days=2), code, other_district, "U5",
         query["event_name"], "另一个区"),
        ("p6", None, 0.998, reported - timedelta(days=366), code, district, "U6",
         query["event_name"], "一年多以前"),
        ("p7", None, 0.997, reported - timedelta(days=1), other_code, district, "U7",
         "别的事件", "另一类事件"),
        ("p8", None, 0.50, reported - timedelta(days=300), code, district, None,
         query["event_name"], "派单时未定单位"),
        ("p9", None, 0.996, reported + timedelta(hours=1), code, district, "U9",
         query["event_name"], "在这份报告之后"),
        # Another report of the query's own case: not a past case of it.
        ("dup", query["input_id"], 0.9999, reported - timedelta(hours=2), code, district,
         "U0", query["event_name"], "同一案件的另一份报告"),
        # Markup in a stored field is shown as text on the board, never as HTML.
        ("p10", None, 0.80, reported - timedelta(days=10), code, district, "U10",
         "<img src=x onerror=alert(1)>占道经营", long_text),
    ]
    rows = []
    ids = {}
    for name, case, cos, at, row_code, row_district, unit, event, text in past:
        ids[name] = input_id = f"{run}-{name}"
        decision = _decision(input_id, at, code=row_code, district=row_district, unit=unit,
                             event_name=event, text=text)
        rows.append(embedding_row(decision, _vector(cos), "test-v1",
                                  case_id=f"{run}-{case}" if case == "c3" else case))
    # The query's own row: decided later than any row the worker might write of it.
    asked = _decision(query["input_id"], reported, code=code, district=district,
                      unit=query["unit"], event_name=query["event_name"], text=query["text"],
                      decided_after=timedelta(days=1))
    rows.append(embedding_row(asked, _vector(1.0), "test-v1"))
    stack.warehouse.insert(EMBEDDINGS_LOG, rows)
    stack.warehouse.insert(EMBEDDINGS_LOG, rows[:3])  # delivered again: still one row each
    at = {name: when for name, _, _, when, *_ in past}
    stack.warehouse.insert("dispatch_feedback_log", [
        # p1: sent back by U1, then accepted by U11: handled by U11, 3 h after the report.
        _verdict(f"{run}-f1", ids["p1"], "corrected", "U11", at["p1"] + timedelta(hours=1)),
        _verdict(f"{run}-f2", ids["p1"], "confirmed", "U11", at["p1"] + timedelta(hours=3)),
        _verdict(f"{run}-f4", ids["p4"], "corrected", "U33", at["p4"] + timedelta(minutes=30)),
        _verdict(f"{run}-f10", ids["p10"], "confirmed", "U10", at["p10"] + timedelta(hours=26)),
        _verdict(f"{run}-f5", ids["p5"], "confirmed", "U5", at["p5"] + timedelta(hours=1)),
    ])

    def case(name: str, case_id: str, cos: float, unit: str, verdict: str,
             hours: float | None, event: str, text: str) -> dict[str, Any]:
        return {
            "case_id": case_id, "input_id": ids[name], "code": code, "event_name": event,
            "district": district, "unit": unit, "verdict": verdict,
            "reported_at": at[name].astimezone(UTC).isoformat(),
            "hours_to_verdict": hours, "score": round(float(np.float32(cos)), 4),
            "text": " ".join(text.split())[:80],
        }

    expected = [
        case("p1", ids["p1"], 0.99, "U11", "confirmed", 3.0, query["event_name"],
             "同一路段又有人乱倒垃圾"),
        # Case c3's best report is p4; p3 is not listed again.
        case("p4", f"{run}-c3", 0.97, "U33", "corrected", 0.5, query["event_name"],
             "同一问题再次反映"),
        case("p2", ids["p2"], 0.95, "U2", "", None, query["event_name"], "小区门口垃圾堆积"),
        case("p10", ids["p10"], 0.80, "U10", "confirmed", 26.0,
             "<img src=x onerror=alert(1)>占道经营", long_text),
        case("p8", ids["p8"], 0.50, "", "", None, query["event_name"], "派单时未定单位"),
    ]
    return {"query": query, "other": other, "expected": expected, "ids": ids}


def test_similar_cases_of_a_waiting_report(stack: SimilarStack, seeded: dict[str, Any]) -> None:
    query_id = seeded["query"]["input_id"]
    expected = seeded["expected"]
    dispatcher = stack.client("dispatcher")
    doc = dispatcher.get(f"/api/similar?input_id={quote(query_id)}&k=5").json()
    # Best first; another district, another type, older than a year, after the report and
    # the report's own case are all left out; one report per case.
    assert doc == {"input_id": query_id, "cases": expected}
    assert len(expected[3]["text"]) == 80
    assert dispatcher.get(f"/api/similar?input_id={quote(query_id)}").json() == doc  # k=5
    top3 = dispatcher.get(f"/api/similar?input_id={quote(query_id)}&k=3").json()
    assert top3 == {"input_id": query_id, "cases": expected[:3]}
    every = dispatcher.get(f"/api/similar?input_id={quote(query_id)}&k=20").json()
    assert every == doc  # only five pass the filters

    # Analysts (API token) and admins may ask too; nobody signed out may.
    analyst = stack.client(token=api_token(stack.settings))
    assert analyst.get(f"/api/similar?input_id={quote(query_id)}&k=5").json() == doc
    assert stack.client("admin").get(f"/api/similar?input_id={quote(query_id)}").status == 200
    assert stack.client().get(f"/api/similar?input_id={quote(query_id)}").status == 401

    # A waiting report with no embedding stored yet, and an unknown report: 404.
    other = dispatcher.get(f"/api/similar?input_id={quote(seeded['other']['input_id'])}")
    assert other.status == 404 and "no stored embedding" in other.json()["error"]
    assert dispatcher.get("/api/similar?input_id=nope-1").status == 404
    for bad, message in (
        ("input_id=a%20b", "input_id must be a report id"),
        ("k=5", "input_id must be a report id"),
        (f"input_id={quote(query_id)}&k=0", "k must be a whole number from 1 to 20"),
        (f"input_id={quote(query_id)}&k=21", "k must be a whole number from 1 to 20"),
        (f"input_id={quote(query_id)}&k=five", "k must be a whole number from 1 to 20"),
    ):
        refused = dispatcher.get(f"/api/similar?{bad}")
        assert refused.status == 400 and refused.json()["error"].startswith(message), bad


def _beijing_date(iso: str) -> str:
    return (datetime.fromisoformat(iso).astimezone(UTC) + SHANGHAI).strftime("%Y-%m-%d")


def test_board_toggle_shows_similar_cases(
    browser: Any, stack: SimilarStack, seeded: dict[str, Any]  # noqa: F811 - fixture
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = _signed_in_page(browser, stack, "dispatcher", "/board")
    query_id = seeded["query"]["input_id"]
    item = page.locator(f"[data-testid=review-item][data-input-id='{query_id}']")
    toggle = item.locator("[data-testid=similar-toggle]")
    panel = item.locator("[data-testid=similar-cases]")
    assert toggle.get_attribute("aria-expanded") == "false" and panel.is_hidden()
    # By keyboard: the toggle is a button, so focus and Enter open it.
    toggle.focus()
    page.keyboard.press("Enter")
    item.locator("[data-testid=similar-cases][data-state=loaded]").wait_for(timeout=15_000)
    assert toggle.get_attribute("aria-expanded") == "true"
    assert panel.get_attribute("id") == toggle.get_attribute("aria-controls")

    rows = panel.locator("[data-testid=similar-case]")
    expected = seeded["expected"]
    assert rows.count() == len(expected)
    for n, case in enumerate(expected):
        row = rows.nth(n)
        assert row.get_attribute("data-case-id") == case["case_id"]
        assert row.locator(".sim-score").inner_text() == f"{case['score']:.2f}"
        event = row.locator(".sim-event").inner_text()
        assert case["code"] in event and case["event_name"] in event and case["text"] in event
        assert row.locator(".sim-place").inner_text() == case["district"]
        assert row.locator(".sim-unit").inner_text() == (case["unit"] or "—")
        hours = case["hours_to_verdict"]
        assert row.locator(".sim-hours").inner_text() == (
            "—" if hours is None else f"{hours:.1f} 小时")
        assert row.locator(".sim-date").inner_text() == _beijing_date(case["reported_at"])
    # Markup in the data stays text.
    assert panel.locator("img").count() == 0
    assert "<img src=x onerror=alert(1)>" in rows.nth(3).locator(".sim-event").inner_text()
    # The list survives the board's refreshes (every 2 s), then closes again.
    page.wait_for_timeout(2500)
    assert rows.count() == len(expected) and panel.is_visible()
    page.screenshot(path=str(SCREENSHOTS / "board-similar.png"))
    toggle.click()
    assert panel.is_hidden() and toggle.get_attribute("aria-expanded") == "false"

    # A report with nothing stored yet says so, and offers to try again.
    other = page.locator(
        f"[data-testid=review-item][data-input-id='{seeded['other']['input_id']}']")
    other.locator("[data-testid=similar-toggle]").click()
    other.locator("[data-testid=similar-cases][data-state=missing]").wait_for(timeout=15_000)
    assert other.locator(".sim-retry").count() == 1

    # Recent decisions have the toggle too: the query report's row lists the same cases
    # when it is among the newest 50; any other row says nothing is stored for it yet.
    recent = page.locator(f"[data-testid=decision-row][data-input-id='{query_id}']")
    state = "loaded" if recent.count() else "missing"
    if not recent.count():
        recent = page.locator("[data-testid=decision-row]").first
    recent.locator("[data-testid=similar-toggle]").press("Enter")
    opened = page.locator(
        f"[data-testid=recent-decisions] [data-testid=similar-cases][data-state={state}]")
    opened.wait_for(timeout=15_000)
    if state == "loaded":
        assert opened.locator("[data-testid=similar-case]").count() == len(expected)
    assert page.errors == []  # type: ignore[attr-defined]
