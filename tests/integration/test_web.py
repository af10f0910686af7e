"""The dispatch board, the city dashboard and analysts' SQL, served by a real worker over
a replayed stream (real Kafka, chDB in the worker, the trained dispatch models), with the
units' verdicts from `citystream units-feedback`: access by role over HTTP, the numbers
the pages show against the stored decisions, and a dispatcher's verdict going through
Kafka into ClickHouse and off the queue."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pipeline import isolated_settings, replay_records
from web_client import WebClient

from infra.services import KafkaBroker
from infra.worker_process import WorkerProcess, settings_env
from schemas.domain import Domain
from streams.kafka_admin import wait_until_stored
from streams.query import api_token
from streams.sample import sample_records
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

REPORTS = 400


@dataclass
class LiveStack:
    settings: Settings
    worker: WorkerProcess
    passwords: dict[str, str]
    run_id: str

    @property
    def base(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def client(self, name: str | None = None, token: str | None = None) -> WebClient:
        client = WebClient(self.base, token)
        if name is not None:
            reply = client.sign_in(name, self.passwords[name])
            assert reply.status == 303, reply
        return client

    def wait_stored(self, timeout_s: float = 120) -> None:
        try:
            wait_until_stored(self.settings, timeout_s)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.worker.log_tail(80)}") from exc


@pytest.fixture(scope="module")
def live(
    kafka: KafkaBroker, trained_models: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    unique = uuid.uuid4().hex[:10]
    root = tmp_path_factory.mktemp("web")
    settings = isolated_settings(kafka.bootstrap, root, unique, trained_models)
    worker = WorkerProcess(settings, root / "worker.log")
    worker.start()
    run_id = f"w{unique[:6]}"
    truth: dict[str, dict[str, str]] = {}
    records = list(sample_records(
        Domain.load(settings.domain_file), REPORTS, seed=5, run_id=run_id,
        span=timedelta(hours=20), truth=truth,
    ))
    replay_records(settings, records)
    stack = LiveStack(settings, worker, worker.ensure_accounts(), run_id)
    stack.wait_stored()
    truth_file = root / "truth.jsonl"
    truth_file.write_bytes(b"".join(orjson.dumps({"id": k, **v}) + b"\n"
                                    for k, v in truth.items()))
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "units-feedback", "--truth", str(truth_file)],
        env=settings_env(settings), capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    stack.wait_stored()
    # On chDB the dashboards' tables follow the logs by one refresh (every 2 s).
    time.sleep(2 * settings.dashboard_refresh_interval_s + 0.5)
    yield stack
    worker.stop()


def test_every_page_and_endpoint_asks_for_its_role(live: LiveStack) -> None:
    anonymous = live.client()
    assert anonymous.get("/api/board").status == 401
    assert anonymous.get("/query?sql=SELECT%201").status == 401
    page = anonymous.get("/board")
    assert page.status == 303 and page.headers["Location"] == "/signin?next=/board"
    assert anonymous.get("/signin").status == 200
    assert anonymous.get("/healthz").status == 200  # operators' probes stay open

    refused = live.client().sign_in("dispatcher", "not-the-password")
    assert refused.status == 303 and "error=1" in refused.headers["Location"]

    dispatcher = live.client("dispatcher")
    assert dispatcher.get("/api/board").status == 200
    assert dispatcher.get("/board").status == 200
    assert dispatcher.get("/api/city").status == 403
    assert dispatcher.get("/query?sql=SELECT%201").status == 403
    # A verdict without the session's CSRF token is refused before anything is published.
    assert dispatcher.post_json("/api/feedback", {"input_id": "x"}, csrf=False).status == 403

    analyst = live.client(token=api_token(live.settings))
    assert analyst.get("/query?sql=SELECT%201").status == 200
    assert analyst.get("/api/board").status == 403
    assert live.client(token="cst_wrong").get("/query?sql=SELECT%201").status == 401

    admin = live.client("admin")
    assert admin.get("/api/board").status == 200 and admin.get("/api/city").status == 200

    # Signing out ends the session.
    assert dispatcher.request("POST", "/signout", headers={
        "X-CSRF-Token": dispatcher.csrf or ""}).status == 204
    assert dispatcher.get("/api/board").status == 401


def test_analysts_sql_in_the_formats_people_use(live: LiveStack) -> None:
    analyst = live.client(token=api_token(live.settings))
    sql = "SELECT code, count() AS n FROM dispatch_decisions GROUP BY code ORDER BY code LIMIT 3"
    doc = analyst.get("/query?sql=" + _q(sql)).json()
    assert doc["columns"] == ["code", "n"] and len(doc["rows"]) == 3
    csv_text = analyst.get("/query?format=csv&sql=" + _q(sql)).text
    assert csv_text.splitlines()[0] == "code,n"
    assert csv_text.splitlines()[1] == f"{doc['rows'][0][0]},{doc['rows'][0][1]}"
    table = analyst.get("/query?format=table&sql=" + _q(sql)).text.splitlines()
    assert table[0].split() == ["code", "n"] and set(table[1]) <= {"-", " "}
    lines = analyst.get("/query?format=jsonl&sql=" + _q(sql)).text.splitlines()
    assert orjson.loads(lines[0]) == {"code": doc["rows"][0][0], "n": doc["rows"][0][1]}
    long_sql = analyst.request("POST", "/query", sql.encode()).json()
    assert long_sql["rows"] == doc["rows"]
    refused = analyst.get("/query?sql=" + _q("DROP TABLE dispatch_decisions_log"))
    assert refused.status == 400 and "allowed" in refused.json()["error"]


def _q(sql: str) -> str:
    from urllib.parse import quote

    return quote(sql)


def test_city_dashboard_numbers_are_the_stored_decisions(live: LiveStack) -> None:
    analyst = live.client("analyst")
    judged = live.worker.query(
        "SELECT countIf(f.verdict = 'confirmed') AS right, count() AS judged "
        "FROM dispatch_feedback AS f WHERE f.auto = 1"
    )[0]
    # On chDB the worker refreshes the dashboards' tables every 2 s: wait for it to have
    # taken the verdicts stored so far.
    deadline = time.monotonic() + 20
    while True:
        doc = analyst.get("/api/city?hours=24").json()
        panels = {name: [dict(zip(p["columns"], r, strict=True)) for r in p["rows"]]
                  for name, p in doc["panels"].items()}
        totals = panels["totals"][0]
        if totals["auto_with_feedback"] == judged["judged"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    since = doc["range"]["since"][:19].replace("T", " ")
    until = doc["range"]["until"][:19].replace("T", " ")
    where = f"received_at >= toDateTime('{since}') AND received_at < toDateTime('{until}')"
    truth = live.worker.query(
        f"SELECT count() AS reports, sum(auto) AS auto FROM dispatch_decisions WHERE {where}"
    )[0]
    assert truth["reports"] >= REPORTS * 0.9  # the sample, less its dead letters
    assert (totals["reports"], totals["auto_dispatched"]) == (truth["reports"], truth["auto"])
    assert sum(r["reports"] for r in panels["volume_by_type"]) == truth["reports"]
    # Reports whose district was not found are a row of their own (district '').
    assert sum(r["reports"] for r in panels["volume_by_district"]) == truth["reports"]
    assert sum(r["reports"] for r in panels["volume_by_hour"]) == truth["reports"]
    assert judged["judged"] == totals["auto_with_feedback"] > 0
    assert totals["auto_correct"] == judged["right"]
    assert totals["auto_accuracy"] == pytest.approx(judged["right"] / judged["judged"])
    assert 0 < totals["compliance"] <= 1
    assert sum(r["due"] for r in panels["compliance_by_unit"]) == totals["due"]
    assert doc["labels"]["event_classes"]["A"] == "市容环境"
    assert analyst.get("/api/city?hours=5").status == 400


def test_a_dispatchers_verdict_goes_through_kafka_and_off_the_queue(live: LiveStack) -> None:
    dispatcher = live.client("dispatcher")
    board = dispatcher.get("/api/board").json()
    assert board["counts"]["review_waiting"] == len(board["review_queue"]) > 0
    assert board["counts"]["decisions_last_hour"] >= REPORTS * 0.9
    item = next(i for i in board["review_queue"] if i["unit"])
    assert any(i["overdue"] for i in board["review_queue"])  # a 20-hour backlog has some

    refused = dispatcher.post_json("/api/feedback", {
        "input_id": item["input_id"], "verdict": "corrected", "unit": "不存在的单位"})
    assert refused.status == 400 and "unknown unit" in refused.json()["error"]
    missing = dispatcher.post_json("/api/feedback", {
        "input_id": "nope-1", "verdict": "confirmed", "unit": item["unit"]})
    assert missing.status == 404

    accepted = dispatcher.post_json("/api/feedback", {
        "input_id": item["input_id"], "verdict": "confirmed", "unit": item["unit"]})
    assert accepted.status == 202, accepted.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        board = dispatcher.get("/api/board").json()
        if item["input_id"] not in {i["input_id"] for i in board["review_queue"]}:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the confirmed report is still waiting for review")
    handled = {h["input_id"]: h for h in board["recently_handled"]}
    assert handled[item["input_id"]]["verdict"] == "confirmed"
    assert handled[item["input_id"]]["dispatcher_id"] == "dispatcher"
    stored = live.worker.query(
        "SELECT verdict, unit, decided_unit, auto, dispatcher_id FROM dispatch_feedback "
        f"WHERE input_id = '{item['input_id']}'"
    )
    assert stored == [{"verdict": "confirmed", "unit": item["unit"],
                       "decided_unit": item["unit"], "auto": 0,
                       "dispatcher_id": "dispatcher"}]


def _now() -> datetime:
    return datetime.now(UTC)


def test_personal_data_is_masked_before_storage_and_models(live: LiveStack) -> None:
    """Appeals are stored and dispatched masked; the raw text is in the restricted table,
    which only the admin role reads; every model output is audited."""
    import hashlib
    import re

    analyst = live.client(token=api_token(live.settings))
    rows = analyst.get("/query?format=jsonl&sql=" + _q(
        "SELECT appeal_id, text, pii_types FROM citizen_appeals "
        f"WHERE appeal_id LIKE '{live.run_id}-%' AND has(pii_types, 'phone')")).text
    masked = [orjson.loads(line) for line in rows.splitlines()]
    assert masked, "the simulator writes callers' numbers into some appeals"
    mobile = re.compile(r"1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}")
    assert not any(mobile.search(r["text"]) for r in masked)
    assert all("[手机号]" in r["text"] for r in masked)
    ids = ", ".join(f"'{r['appeal_id']}'" for r in masked)
    decided = analyst.get("/query?format=jsonl&sql=" + _q(
        f"SELECT input_id, text FROM dispatch_decisions WHERE input_id IN ({ids})")).text
    decisions = [orjson.loads(line) for line in decided.splitlines()]
    assert decisions and not any(mobile.search(d["text"]) for d in decisions)

    raw_sql = _q(f"SELECT text FROM citizen_appeals_raw_log WHERE appeal_id IN ({ids})")
    refused = analyst.get("/query?sql=" + raw_sql)
    assert refused.status == 403 and "admin" in refused.json()["error"]
    raw = live.client("admin").get("/query?sql=" + raw_sql).json()["rows"]
    assert len(raw) == len(masked) and all(mobile.search(r[0]) for r in raw)

    audit = analyst.get("/query?format=jsonl&sql=" + _q(
        "SELECT input_id, model, version, input_hash, output FROM model_audit "
        f"WHERE input_id IN ({ids})")).text
    audited = [orjson.loads(line) for line in audit.splitlines()]
    assert {(a["input_id"], a["model"]) for a in audited} == {
        (d["input_id"], m) for d in decisions
        for m in ("dispatch_router", "event_classifier", "case_embedder")}
    texts = {d["input_id"]: d["text"] for d in decisions}
    assert all(a["input_hash"] == hashlib.sha256(texts[a["input_id"]].encode()).hexdigest()
               for a in audited)
    assert all(a["version"] for a in audited)


# --------------------------------------------------------------------- in a real browser

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, as root, with no network of its own (see infra/install-system-deps.sh).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _signed_in_page(browser: Any, live: LiveStack, name: str, path: str) -> Any:
    context = browser.new_context(viewport={"width": 1920, "height": 1080},
                                  locale="zh-CN", timezone_id="Asia/Shanghai")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.base + path)
    assert page.url.startswith(live.base + "/signin"), page.url  # sent to sign in first
    page.fill("#username", name)
    page.fill("#password", live.passwords[name])
    page.click("[data-testid=signin]")
    page.wait_for_url(live.base + path)
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _number(page: Any, testid: str) -> int:
    return int(page.locator(f"[data-testid={testid}]").inner_text().replace(",", ""))


def _percent(page: Any, testid: str) -> float:
    text = page.locator(f"[data-testid={testid}]").inner_text()
    assert text.endswith("%"), text
    return float(text.rstrip("%"))


def test_board_in_a_browser_confirm_and_correct(browser: Any, live: LiveStack) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    failed = live.client().sign_in("dispatcher", "wrong-password-123")
    assert "error=1" in failed.headers["Location"]
    page = _signed_in_page(browser, live, "dispatcher", "/board")
    api = live.client("dispatcher").get("/api/board").json()

    # The counters are the pipeline's numbers (the API's, which the tests above check
    # against the stored decisions).
    assert _number(page, "count-decisions-last-hour") == api["counts"]["decisions_last_hour"]
    assert _number(page, "count-review-waiting") == api["counts"]["review_waiting"]
    items = page.locator("[data-testid=review-item]")
    assert items.count() == len(api["review_queue"])
    overdue = page.locator("[data-testid=review-item].overdue")
    assert overdue.count() == sum(i["overdue"] for i in api["review_queue"]) > 0
    assert "超时" in overdue.first.inner_text()
    assert page.locator("[data-testid=decision-row]").count() > 0
    page.screenshot(path=str(SCREENSHOTS / "board.png"))

    # Confirm one (with the proposed unit), correct another: both change at once, then
    # leave the queue once their verdicts are stored, and show up as handled.
    with_unit = [i for i in api["review_queue"] if i["unit"]]
    confirm_id, correct_id = with_unit[0]["input_id"], with_unit[1]["input_id"]
    confirm_item = page.locator(f"[data-testid=review-item][data-input-id='{confirm_id}']")
    assert confirm_item.locator("[data-testid=status]").inner_text() == "待审核"
    confirm_item.locator("[data-testid=confirm]").click()
    page.wait_for_function(
        "id => document.querySelector(`[data-input-id='${id}'] [data-testid=status]`)"
        "?.textContent === '已确认'", arg=confirm_id, timeout=10_000)
    correct_item = page.locator(f"[data-testid=review-item][data-input-id='{correct_id}']")
    choices = correct_item.locator("[data-testid=correct-unit] option")
    target = next(v for v in (choices.nth(i).get_attribute("value")
                              for i in range(choices.count()))
                  if v and v != with_unit[1]["unit"])
    correct_item.locator("[data-testid=correct-unit]").select_option(target)
    correct_item.locator("[data-testid=correct]").click()
    page.wait_for_function(
        "id => document.querySelector(`[data-input-id='${id}'] [data-testid=status]`)"
        "?.textContent === '已改派'", arg=correct_id, timeout=10_000)
    page.screenshot(path=str(SCREENSHOTS / "board-after-verdicts.png"))
    for input_id in (confirm_id, correct_id):
        page.wait_for_selector(
            f"[data-testid=recently-handled] [data-testid=handled-row][data-input-id='{input_id}']",
            timeout=30_000)
        page.wait_for_selector(f"[data-testid=review-item][data-input-id='{input_id}']",
                               state="detached", timeout=30_000)
    stored = {r["input_id"]: r for r in live.worker.query(
        "SELECT input_id, verdict, unit FROM dispatch_feedback "
        f"WHERE input_id IN ('{confirm_id}', '{correct_id}')")}
    assert stored[confirm_id]["verdict"] == "confirmed"
    assert (stored[correct_id]["verdict"], stored[correct_id]["unit"]) == ("corrected", target)
    assert page.errors == []  # type: ignore[attr-defined]


def test_city_dashboard_in_a_browser(browser: Any, live: LiveStack) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = _signed_in_page(browser, live, "analyst", "/city")
    api = live.client("analyst").get("/api/city?hours=24").json()
    totals = dict(zip(api["panels"]["totals"]["columns"], api["panels"]["totals"]["rows"][0],
                      strict=True))
    assert _number(page, "total-reports") == totals["reports"] > 0
    assert _percent(page, "total-auto-rate") == pytest.approx(totals["auto_rate"] * 100, abs=0.051)
    assert _percent(page, "total-auto-accuracy") == pytest.approx(
        totals["auto_accuracy"] * 100, abs=0.051)
    assert _percent(page, "total-compliance") == pytest.approx(
        totals["compliance"] * 100, abs=0.051)
    charts = ("volume_by_hour", "volume_by_type", "volume_by_district", "hotspots",
              "quality_by_hour", "compliance_by_unit")
    for name in charts:
        panel = page.locator(f"[data-testid=panel-{name}]")
        panel.locator("xpath=self::*[@data-rendered='true']").wait_for(timeout=30_000)
        assert int(panel.get_attribute("data-rows")) == len(api["panels"][name]["rows"]) > 0
    assert page.locator("[data-testid=place-row]").count() == min(
        len(api["panels"]["top_places"]["rows"]), 20) > 0
    page.screenshot(path=str(SCREENSHOTS / "city.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
