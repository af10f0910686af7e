"""Hostile appeals and events through the real pipeline: a real broker, the worker (ingest,
masking, analysis, dispatch on trained models, the decision store) and its chDB.

Every message sent is accounted for (a stored row, or a dead letter with its reason;
none lost, none twice), injection-looking text is stored verbatim (masked where it holds
personal data), and the tables are all there and count right afterwards. Also: the
similar-case search's SQL with injection-looking filters on both engines.

(That ``/query`` refuses writes is tested in tests/unit/test_query.py and
tests/integration/test_web.py.)"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from processors.ingest import normalise_text
from processors.pii import mask
from processors.similar import SearchFilters, similar_from_rows, similar_sql
from schemas.migrations import migrate
from streams.clickhouse import Warehouse
from streams.kafka_admin import create_topics, producer, wait_until_stored
from streams.settings import Settings
from streams.topics import CITIZEN_APPEALS, CITY_EVENTS

pytestmark = pytest.mark.integration

INJECTION = "'; DROP TABLE citizen_appeals_log; --"
INJECTION_2 = "\\'); DELETE FROM city_events_log WHERE 1=1; -- \" `x` \\\\"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Sent:
    topic: str  # catalogue name: citizen.appeals or city.events
    record_id: str
    value: bytes
    expect: str  # "stored" or the dead letter's error kind
    text: str = ""  # the text as sent, for stored ones


def _appeal(rid: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "citizen_appeal",
        "schema_version": 1,
        "appeal_id": rid,
        "channel": "app",
        "received_at": (NOW - timedelta(minutes=5)).isoformat(),
        "text": text,
        **extra,
    }


def _event(rid: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "city_event",
        "schema_version": 1,
        "event_id": rid,
        "source": "grid_inspector",
        "reported_at": (NOW - timedelta(minutes=5)).isoformat(),
        "description": description,
        **extra,
    }


def _messages() -> list[Sent]:
    out: list[Sent] = []

    def appeal(rid: str, text: str, expect: str = "stored", *, ascii_json: bool = False,
               **extra: Any) -> None:  # fmt: skip
        raw = json.dumps(_appeal(rid, text, **extra), ensure_ascii=ascii_json)
        out.append(Sent("citizen.appeals", rid, raw.encode("utf-8", "surrogatepass"), expect, text))

    def event(rid: str, text: str, expect: str = "stored", **extra: Any) -> None:
        raw = json.dumps(_event(rid, text, **extra), ensure_ascii=False).encode()
        out.append(Sent("city.events", rid, raw, expect, text))

    appeal("hx-inj", f"{INJECTION} 香港中路路灯不亮")
    appeal("hx-inj-pii", f"{INJECTION_2} 联系电话13800001234，我叫张建国", address=INJECTION)
    appeal("hx-emoji", "😡🤬🆘🚧" * 25)
    appeal("hx-mixed", "مرحبا 市南区香港中路 שלום hello 路灯不亮 한국어 Ελληνικά")
    appeal("hx-zw", "路\u200b灯\u200d不\u2060亮\ufeff，香港中路")
    appeal("hx-nul", "路灯\x00不亮\x01，香港中路")  # escaped in JSON: dropped by ingest
    appeal("hx-long-ok", "香港中路路灯不亮。" * 400)  # 3,600 characters: under the limit
    appeal("hx-abuse", "你们这群狗官，香港中路路灯坏了一个月")
    appeal("hx-long", "香港中路路灯不亮。" * 11_200, "oversize")  # 100 kB
    appeal("hx-long-ascii", "A" * 100_000, "oversize")
    appeal("hx-zw-only", "\u200b\ufeff" * 50, "invalid_field")
    appeal("hx-sur-esc", "路灯\ud800不亮", "malformed_json", ascii_json=True)
    appeal("hx-sur-raw", "路灯\udfff不亮", "undecodable")
    appeal("hx-channel", "路灯不亮", "invalid_field", channel=INJECTION)
    event("hx-ev-inj", f"{INJECTION} 井盖丢失", street=INJECTION)
    event("hx-ev-emoji", "🚧🚧🚧")
    event("hx-ev-district", "井盖丢失", "unknown_place", district=INJECTION)
    event("hx-ev-code", "井盖丢失", "invalid_field", code=INJECTION)
    # Not even JSON, or an id that cannot be a key: dead letters, found by their bytes.
    out.append(Sent("city.events", "", b"\x00\x00\xff'; DROP TABLE x; --", "undecodable"))
    bad_id = json.dumps(_event(INJECTION, "井盖丢失")).encode()
    out.append(Sent("city.events", "", bad_id, "invalid_field"))
    return out


def _expected_text(text: str, limit: int) -> str:
    return mask(normalise_text(text, limit, "text")).text


def test_hostile_messages_are_all_accounted_for(settings: Settings, worker_factory: Any) -> None:
    sent = _messages()
    create_topics(settings)
    prod = producer(settings)
    try:
        for n, msg in enumerate(sent):
            prod.send(settings.topic(msg.topic), value=msg.value, key=f"k{n}".encode()).get(
                timeout=30
            )
    finally:
        prod.close()
    worker = worker_factory(settings)
    worker.start()
    try:
        wait_until_stored(settings, 180)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker.log_tail(80)}") from exc

    appeals = {
        r["appeal_id"]: r
        for r in worker.query(
            "SELECT appeal_id, text, address, content_flags, pii_types, urgency "
            "FROM citizen_appeals WHERE appeal_id LIKE 'hx-%'"
        )
    }
    events = {
        r["event_id"]: r
        for r in worker.query(
            "SELECT event_id, description, street, warnings FROM city_events "
            "WHERE event_id LIKE 'hx-%'"
        )
    }
    letters = worker.query(
        "SELECT source_topic, error_kind, reason, original_b64 FROM dead_letters"
    )
    by_original = {base64.b64decode(d["original_b64"]): d for d in letters}

    # Every message: stored once, or one dead letter with the expected kind and a reason.
    stored_expected = {m.record_id for m in sent if m.expect == "stored"}
    assert set(appeals) | set(events) == stored_expected
    assert len(letters) == len(sent) - len(stored_expected)
    for msg in sent:
        if msg.expect == "stored":
            continue
        letter = by_original.get(msg.value)
        assert letter is not None, f"{msg.record_id or msg.value[:40]!r} lost"
        assert letter["error_kind"] == msg.expect, letter
        assert letter["reason"] and letter["source_topic"] == settings.topic(msg.topic)

    # Stored as written (normalised), personal data masked, injection text verbatim.
    texts = {m.record_id: m.text for m in sent if m.expect == "stored"}
    for rid, row in appeals.items():
        assert row["text"] == _expected_text(texts[rid], settings.max_text_chars), rid
    assert appeals["hx-inj"]["text"] == f"{INJECTION} 香港中路路灯不亮"
    inj_pii = appeals["hx-inj-pii"]
    assert inj_pii["text"].startswith(INJECTION_2)
    assert "13800001234" not in inj_pii["text"] and "张建国" not in inj_pii["text"]
    assert set(inj_pii["pii_types"]) == {"phone", "name"}
    assert inj_pii["address"] == INJECTION
    assert appeals["hx-emoji"]["text"] == "😡🤬🆘🚧" * 25
    assert appeals["hx-nul"]["text"] == "路灯不亮,香港中路"  # NFKC: a full-width comma is ","
    assert "abuse" in appeals["hx-abuse"]["content_flags"]
    assert events["hx-ev-inj"]["description"] == f"{INJECTION} 井盖丢失"
    assert events["hx-ev-inj"]["street"] == INJECTION
    assert "unknown_street" in events["hx-ev-inj"]["warnings"]

    # Every stored report was dispatched once; its decision carries the masked text.
    decisions = worker.query(
        "SELECT input_id, text FROM dispatch_decisions WHERE input_id LIKE 'hx-%'"
    )
    assert Counter(d["input_id"] for d in decisions) == Counter(stored_expected)
    by_id = {d["input_id"]: d["text"] for d in decisions}
    assert "13800001234" not in by_id["hx-inj-pii"] and by_id["hx-inj"].startswith(INJECTION)

    # The tables are all there and count what was stored.
    tables = {r["name"] for r in worker.query("SHOW TABLES")}
    assert {
        "citizen_appeals_log", "citizen_appeals_raw_log", "city_events_log",
        "dead_letters_log", "dispatch_decisions_log", "model_audit_log",
    } <= tables  # fmt: skip
    counts = worker.query(
        "SELECT (SELECT count() FROM citizen_appeals_log WHERE appeal_id LIKE 'hx-%') AS a, "
        "(SELECT count() FROM city_events_log WHERE event_id LIKE 'hx-%') AS e, "
        "(SELECT count() FROM dead_letters) AS d, "
        "(SELECT count() FROM dispatch_decisions_log WHERE input_id LIKE 'hx-%') AS k"
    )[0]
    assert (counts["a"], counts["e"]) == (len(appeals), len(events))
    assert counts["d"] == len(sent) - len(stored_expected)
    assert counts["k"] == len(stored_expected)
    assert worker.metric("citystream_dead_letters_total") == counts["d"]
    assert CITIZEN_APPEALS.name == "citizen.appeals" and CITY_EVENTS.name == "city.events"


# --- similar-case search: hostile filters on both engines ------------------------------------
HOSTILE_DISTRICTS = [
    "'; DROP TABLE case_embeddings; --",
    "市南区' OR '1'='1",
    "a\\'); DROP TABLE case_embeddings; --",
    "\\",
    "\\\\'",
    "😡 مرحبا 市南区",
]


def test_similar_search_with_injection_looking_filters(warehouse: Warehouse) -> None:
    migrate(warehouse)
    warehouse.command(
        "CREATE TABLE IF NOT EXISTS hostile_embeddings (case_id String, code String, "
        "district String, reported_at DateTime, embedding Array(Float32)) "
        "ENGINE = MergeTree ORDER BY (district, case_id)"
    )
    at = datetime(2026, 1, 1, 8, 0)
    vector = [1.0] + [0.0] * 63
    rows = [
        {"case_id": f"c{i}", "code": "E02", "district": d, "reported_at": at, "embedding": vector}
        for i, d in enumerate([*HOSTILE_DISTRICTS, "市南区"])
    ]
    warehouse.insert("hostile_embeddings", rows)
    query = np.array(vector, dtype=np.float32)
    for i, district in enumerate(HOSTILE_DISTRICTS):
        filters = SearchFilters(code="E02", district=district, exclude_case_id=f"x{district}")
        found = similar_from_rows(
            warehouse.query(similar_sql(query, filters, 5, "hostile_embeddings")).rows
        )
        assert [(c.case_id, c.district) for c in found] == [(f"c{i}", district)], district
    # Nothing was dropped or deleted on the way.
    assert warehouse.query("SELECT count() FROM hostile_embeddings").rows[0][0] == len(rows)
    stored = warehouse.query("SELECT district FROM hostile_embeddings ORDER BY case_id").rows
    assert sorted(r[0] for r in stored) == sorted([*HOSTILE_DISTRICTS, "市南区"])
