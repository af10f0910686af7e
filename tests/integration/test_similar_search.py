"""Similar-case search: the SQL (processors.similar.similar_sql) run by chDB and by Debian's
clickhouse-server 18.16 returns exactly what the in-memory ranking returns on the same
embeddings (same cases, same order, same scores)."""

from __future__ import annotations

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
    CaseWindow,
    SearchFilters,
    rank_in_memory,
    similar_from_rows,
    similar_sql,
)
from schemas.domain import Domain
from streams.clickhouse import ChdbWarehouse, ServerWarehouse, Warehouse
from streams.settings import Settings

pytestmark = pytest.mark.integration

DIMS = 32
TABLE_DDL = (
    "CREATE TABLE case_embeddings (case_id String, code String, district String, "
    "reported_at DateTime, embedding Array(Float32)) "
    "ENGINE = MergeTree ORDER BY (district, code, reported_at, case_id)"
)


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
    warehouse.command(TABLE_DDL)
    warehouse.insert("case_embeddings", rows)
    # A row of another dimension is skipped by the query, not an error.
    warehouse.insert("case_embeddings", [{**rows[0], "case_id": "odd", "embedding": [1.0]}])
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
