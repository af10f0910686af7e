"""Similar-case search: the SQL (processors.similar.similar_sql) run by chDB and by Debian's
clickhouse-server 18.16 returns exactly what the in-memory ranking returns on the same
embeddings (same cases, same order, same scores)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pipeline import started_triton

from infra.services import ClickHouseServer
from infra.triton import TritonServer
from models.embedding.encode import OnnxEmbedder
from models.embedding.export import build_ngram_embedder, save_model
from models.features import BUCKETS
from models.simulator import HistoryRecord, generate_history
from processors.similar import (
    EMBEDDINGS_LOG,
    CaseWindow,
    PastCase,
    SearchFilters,
    decision_filters,
    embedding_row,
    past_cases_from_rows,
    rank_in_memory,
    similar_cases_sql,
    similar_from_rows,
    similar_sql,
)
from schemas.domain import Domain
from schemas.migrations import migrate
from schemas.records import DispatchDecision
from streams.clickhouse import ChdbWarehouse, ServerWarehouse, Warehouse
from streams.settings import Settings

pytestmark = pytest.mark.integration

DIMS = 32


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], CaseWindow, list]:
    """400 simulated past cases and 12 later queries, embedded by an n-gram embedder with
    seeded random weights (the SQL must agree with numpy whatever the model)."""
    domain = Domain.load(Settings().domain_file)
    past = generate_history(domain, 400, seed=501, start=date(2025, 1, 1), end=date(2025, 6, 30))
    queries = generate_history(domain, 12, seed=502, start=date(2025, 7, 1), end=date(2025, 7, 31))
    weights = np.random.default_rng(5).normal(0, 1, (BUCKETS, DIMS)).astype(np.float32)
    path = save_model(build_ngram_embedder(weights), tmp_path_factory.mktemp("emb") / "e.onnx")
    embedder = OnnxEmbedder(path)
    past_vectors = embedder.embed([r.text for r in past])
    query_vectors = embedder.embed([r.text for r in queries])
    past_vectors[7] = past_vectors[8]  # an exact tie, decided by case_id on both sides
    rows = [
        {
            "case_id": r.record_id,
            "input_id": r.record_id,
            "code": r.code,
            "district": r.district,
            "reported_at": r.reported_at.astimezone(UTC).replace(tzinfo=None),
            "embedding": [float(x) for x in vec],
        }
        for r, vec in zip(past, past_vectors, strict=True)
    ]
    window = CaseWindow.build(
        [r["case_id"] for r in rows],
        [r["code"] for r in rows],
        [r["district"] for r in rows],
        [r["reported_at"] for r in rows],
        past_vectors,
    )
    return rows, window, list(zip(queries, query_vectors, strict=True))


@pytest.fixture(params=["chdb", "server"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[Warehouse]:
    if request.param == "chdb":
        wh: Warehouse = ChdbWarehouse(tmp_path / "chdb", f"sim_{unique}")
    else:
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        wh = ServerWarehouse(server.url, f"sim_{unique}")
    yield wh
    wh.close()


def _filters(query: HistoryRecord) -> list[SearchFilters]:
    at = query.reported_at.astimezone(UTC).replace(tzinfo=None)
    return [
        SearchFilters(),
        SearchFilters(district=query.district),
        SearchFilters(code=query.code, since=at - timedelta(days=90), until=at),
        SearchFilters(
            code=query.code, district=query.district, since=datetime(2025, 1, 1), until=at
        ),
        SearchFilters(district="O'Brien\\区 --"),  # escaped, matches nothing
    ]


def test_sql_search_equals_in_memory_ranking(warehouse: Warehouse, cases: tuple) -> None:
    rows, window, queries = cases
    migrate(warehouse)  # the real table (migration 0006), read through its view
    warehouse.insert(EMBEDDINGS_LOG, rows)
    # A row of another dimension is skipped by the query, not an error.
    odd = {**rows[0], "case_id": "odd", "input_id": "odd", "embedding": [1.0]}
    warehouse.insert(EMBEDDINGS_LOG, [odd])
    assert warehouse.query("SELECT count() FROM case_embeddings").scalar() == len(rows) + 1
    checked = 0
    for query, vector in queries:
        for filters in _filters(query):
            for k in (1, 5, 20):
                sql = similar_sql(vector, filters, k, "case_embeddings", DIMS)
                got = similar_from_rows(warehouse.query(sql).rows)
                expected = rank_in_memory(vector, window, filters, k)
                assert got == expected, (warehouse.dialect, filters, k)
                checked += len(expected)
    assert checked > 500
    # The tie: the same score, the smaller case_id first, on the engine too.
    tied = similar_from_rows(
        warehouse.query(
            similar_sql(window.embeddings[7], SearchFilters(), 2, "case_embeddings", DIMS)
        ).rows
    )
    assert [c.case_id for c in tied] == sorted([rows[7]["case_id"], rows[8]["case_id"]])
    assert tied[0].score == tied[1].score


def decision_of(
    input_id: str,
    reported_at: datetime,
    *,
    code: str = "A01",
    district: str | None = "市南区",
    unit: str | None = "市南区城市管理局",
    text: str = "路边垃圾没人清理",
    decided_after: timedelta = timedelta(seconds=1),
) -> DispatchDecision:
    at = reported_at.replace(tzinfo=UTC)
    return DispatchDecision(
        kind="dispatch_decision", schema_version=1, input_id=input_id,
        input_kind="citizen_appeal", channel="hotline_12345", text=text, code=code,
        event_name=f"事件{code}", urgency="normal", route="S", unit=unit, district=district,
        confidence=0.95, auto=True, backend="onnxruntime",
        received_at=at.isoformat(),  # type: ignore[arg-type]
        decided_at=(at + decided_after).isoformat(),  # type: ignore[arg-type]
    )


def test_rows_from_decisions_are_stored_once_and_found_with_filters(
    warehouse: Warehouse, cases: tuple
) -> None:
    """embedding_row -> case_embeddings_log (each row delivered twice, one decided again
    later) -> similar_sql over the view: exactly rank_in_memory's answer."""
    rows, window, queries = cases
    migrate(warehouse)
    decisions = [
        decision_of(r["case_id"], r["reported_at"], code=r["code"], district=r["district"])
        for r in rows
    ]
    stored = [
        embedding_row(d, vec, "test-v1")
        for d, vec in zip(decisions, window.embeddings, strict=True)
    ]
    warehouse.insert(EMBEDDINGS_LOG, stored)
    warehouse.insert(EMBEDDINGS_LOG, stored[:50])  # a repeated delivery
    later = decision_of(
        rows[0]["case_id"], rows[0]["reported_at"], code=rows[0]["code"],
        district=rows[0]["district"], unit="另一个单位", decided_after=timedelta(minutes=5),
    )
    warehouse.insert(EMBEDDINGS_LOG, [embedding_row(later, window.embeddings[0], "test-v1")])
    assert warehouse.query("SELECT count() FROM case_embeddings").scalar() == len(rows)
    assert warehouse.query(
        f"SELECT unit, model_version FROM case_embeddings WHERE input_id = '{rows[0]['case_id']}'"
    ).rows == [("另一个单位", "test-v1")]
    found = 0
    for query, vector in queries:
        asked = decision_of(
            "q-" + query.record_id, query.reported_at.astimezone(UTC).replace(tzinfo=None),
            code=query.code, district=query.district,
        )
        for filters in (
            decision_filters(asked, window=timedelta(days=120)),
            decision_filters(asked, by_code=False),
            SearchFilters(code=query.code),
        ):
            sql = similar_sql(vector, filters, 5, "case_embeddings", DIMS)
            got = similar_from_rows(warehouse.query(sql).rows)
            assert got == rank_in_memory(vector, window, filters, 5), (warehouse.dialect, filters)
            assert all(c.code == query.code for c in got if filters.code)
            assert all(c.district == query.district for c in got if filters.district)
            found += len(got)
    assert found > 60


def _unit_vector(cos: float) -> np.ndarray:
    vector = np.zeros(64, dtype=np.float32)
    vector[0], vector[1] = cos, np.sqrt(1.0 - cos * cos)
    return vector


def test_similar_cases_say_how_they_were_handled_and_how_long_it_took(
    warehouse: Warehouse,
) -> None:
    migrate(warehouse)
    day = datetime(2026, 3, 10, 8, 0)
    asked = decision_of("now-1", day)
    past = [
        # input_id, case_id, cosine to the query, reported, district, code, unit
        ("p1", "p1", 0.99, day - timedelta(days=3), "市南区", "A01", "U1"),
        ("p2", "p2", 0.95, day - timedelta(days=5), "市南区", "A01", "U2"),
        ("p3", "c3", 0.90, day - timedelta(days=7), "市南区", "A01", "U3"),
        ("p4", "c3", 0.97, day - timedelta(days=7, hours=-1), "市南区", "A01", "U3"),
        ("p5", "p5", 0.999, day - timedelta(days=2), "市北区", "A01", "U5"),  # district
        ("p6", "p6", 0.98, day - timedelta(days=40), "市南区", "A01", "U6"),  # too old
        ("p7", "p7", 0.98, day - timedelta(days=1), "市南区", "B02", "U7"),  # other type
        ("p8", "p8", 0.50, day - timedelta(days=9), "市南区", "A01", ""),  # no unit settled
    ]
    rows = [
        embedding_row(
            decision_of(i, at, code=code, district=district, unit=unit or None),
            _unit_vector(cos), "test-v1", case_id=case,
        )
        for i, case, cos, at, district, code, unit in past
    ]
    rows.append(embedding_row(asked, _unit_vector(1.0), "test-v1"))  # the query itself
    warehouse.insert(EMBEDDINGS_LOG, rows)
    warehouse.insert(EMBEDDINGS_LOG, rows[:2])  # delivered again: still one row each

    def verdict(fid: str, input_id: str, verdict: str, unit: str, at: datetime) -> dict:
        return {
            "feedback_id": fid, "input_id": input_id, "verdict": verdict, "unit": unit,
            "code": "", "dispatcher_id": "unit", "given_at": at, "kafka_topic": "t",
            "kafka_partition": 0, "kafka_offset": 1,
        }

    warehouse.insert("dispatch_feedback_log", [
        # p1 sent back by U1, then accepted by U9: handled by U9, 3 h after the report.
        verdict("f1", "p1", "corrected", "U9", past[0][3] + timedelta(hours=1, minutes=30)),
        verdict("f2", "p1", "confirmed", "U9", past[0][3] + timedelta(hours=3)),
        verdict("f4", "p4", "confirmed", "U3", past[3][3] + timedelta(minutes=30)),
    ])
    filters = decision_filters(asked, window=timedelta(days=30))
    q = _unit_vector(1.0)
    got = past_cases_from_rows(warehouse.query(similar_cases_sql(q, filters, 5)).rows)
    score = {cos: float(np.float32(cos)) for cos in (0.99, 0.97, 0.95, 0.5)}
    assert got == [
        PastCase("p1", "p1", "A01", "事件A01", "市南区", "U9", "confirmed",
                 past[0][3], 3.0, score[0.99]),
        # Case c3's best report is p4; p3 is not listed again.
        PastCase("c3", "p4", "A01", "事件A01", "市南区", "U3", "confirmed",
                 past[3][3], 0.5, score[0.97]),
        PastCase("p2", "p2", "A01", "事件A01", "市南区", "U2", "", past[1][3], None,
                 score[0.95]),
        PastCase("p8", "p8", "A01", "事件A01", "市南区", "", "", past[7][3], None,
                 score[0.5]),
    ], warehouse.dialect
    # With the reports' texts (what the board shows of a past case): the same cases.
    texts = warehouse.query(similar_cases_sql(q, filters, 5, with_text=True)).rows
    assert [c.text for c in past_cases_from_rows(texts)] == ["路边垃圾没人清理"] * 4
    assert [dataclasses.replace(c, text=None) for c in past_cases_from_rows(texts)] == got
    top2 = past_cases_from_rows(warehouse.query(similar_cases_sql(q, filters, 2)).rows)
    assert [c.input_id for c in top2] == ["p1", "p4"]
    # Without the type and district: p5 (市北区) and p7 (another type) come in.
    loose = decision_filters(asked, window=timedelta(days=30), by_code=False, by_district=False)
    got = past_cases_from_rows(warehouse.query(similar_cases_sql(q, loose, 3)).rows)
    assert [(c.input_id, c.unit) for c in got] == [("p5", "U5"), ("p1", "U9"), ("p7", "U7")]


# ------------------------------------------------------------- served like other models


@pytest.fixture(scope="module")
def embedder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights = np.random.default_rng(6).normal(0, 1, (BUCKETS, DIMS)).astype(np.float32)
    return save_model(
        build_ngram_embedder(weights), tmp_path_factory.mktemp("served") / "case_embedder.onnx"
    )


@pytest.fixture(scope="module")
def embedder_triton(
    tmp_path_factory: pytest.TempPathFactory, embedder_file: Path
) -> Iterator[TritonServer]:
    """tritonserver (infra.triton, Python backend) serving the embedder from a repository
    written by models.repository, as make train writes the dispatch models."""
    from models.repository import write_model_repository

    root = tmp_path_factory.mktemp("embedder-triton")
    write_model_repository(root / "repository", [embedder_file])
    server = started_triton(root / "server", root / "repository")
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_serves_the_embedder_like_onnxruntime(
    embedder_triton: TritonServer, embedder_file: Path, cases: tuple, protocol: str
) -> None:
    from models.embedding.encode import BackendEmbedder
    from models.inference import TritonBackend

    url = embedder_triton.grpc_url if protocol == "grpc" else embedder_triton.http_url
    backend = TritonBackend(url, protocol=protocol, timeout_s=10, retries=1)
    try:
        texts = [r.text for r, _ in cases[2]] + ["", "😀", "路灯不亮"]
        served = BackendEmbedder(backend, embedder_file, batch_size=8).embed(texts)
        local = OnnxEmbedder(embedder_file).embed(texts)
        np.testing.assert_allclose(served, local, atol=1e-6)
    finally:
        backend.close()
