from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from processors.similar import (
    CaseWindow,
    PastCase,
    SearchFilters,
    decision_filters,
    embedding_row,
    past_cases_from_rows,
    quote_string,
    rank_in_memory,
    sequential_scores,
    similar_cases_sql,
    similar_from_rows,
    similar_sql,
    vector_literal,
)
from schemas.catalogue import view_doc
from schemas.records import DispatchDecision

# What analysts are told the view holds: what embedding_row writes.
CATALOGUE_COLUMNS = tuple(view_doc("case_embeddings").columns)  # type: ignore[union-attr]

D = 4
Q = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ------------------------------------------------------------------------- SQL builder


def test_sql_shape_and_filters() -> None:
    filters = SearchFilters(
        code="A01",
        district="市南区",
        since=datetime(2025, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))),
        until=datetime(2025, 2, 1),
        exclude_case_id="c-1",
    )
    sql = similar_sql(Q, filters, 5, "case_embeddings", D)
    assert sql.startswith("SELECT case_id, code, district, reported_at, arraySum(arrayMap(")
    assert "cosineDistance" not in sql and "dotProduct" not in sql  # absent from 18.16
    assert "code = 'A01'" in sql and "district = '市南区'" in sql
    # Aware times are converted to UTC; naive ones are UTC already.
    assert "reported_at >= toDateTime('2025-01-01 00:00:00', 'UTC')" in sql
    assert "reported_at < toDateTime('2025-02-01 00:00:00', 'UTC')" in sql
    assert "case_id != 'c-1'" in sql
    assert f"length(embedding) = {D}" in sql
    assert sql.endswith("ORDER BY score DESC, case_id ASC LIMIT 5")


def test_no_filters_means_no_predicates_but_the_dimension() -> None:
    sql = similar_sql(Q, SearchFilters(), 3, "db1.case_embeddings", D)
    where = sql.split(" WHERE ", 1)[1].split(" ORDER BY ")[0]
    assert where == f"length(embedding) = {D}"


@pytest.mark.parametrize("code", ["a01", "A1", "A011", "A01'; DROP TABLE x; --", "", "Ａ01"])
def test_bad_codes_are_refused(code: str) -> None:
    with pytest.raises(ValueError, match="event code"):
        SearchFilters(code=code)


@pytest.mark.parametrize(
    ("district", "literal"),
    [
        ("x' OR 1=1 --", "'x\\' OR 1=1 --'"),
        ("back\\slash'", "'back\\\\slash\\''"),
        ("市南区", "'市南区'"),
    ],
)
def test_districts_are_escaped(district: str, literal: str) -> None:
    assert quote_string(district) == literal
    sql = similar_sql(Q, SearchFilters(district=district), 5, "case_embeddings", D)
    assert f"district = {literal}" in sql
    # Outside the literal, only our own text: the quote count is balanced.
    unescaped = re.sub(r"\\.", "", sql)
    assert unescaped.count("'") % 2 == 0


@pytest.mark.parametrize("district", ["", "a\nb", "a\x00b", "tab\there"])
def test_control_characters_and_empty_districts_are_refused(district: str) -> None:
    with pytest.raises(ValueError, match="district"):
        SearchFilters(district=district)


def test_other_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="table"):
        similar_sql(Q, SearchFilters(), 5, "t; DROP TABLE x", D)
    with pytest.raises(ValueError, match="k must"):
        similar_sql(Q, SearchFilters(), 0, "t", D)
    with pytest.raises(ValueError, match="k must"):
        similar_sql(Q, SearchFilters(), 10_000, "t", D)
    with pytest.raises(ValueError, match="shape"):
        similar_sql(Q[:3], SearchFilters(), 5, "t", D)
    with pytest.raises(ValueError, match="non-finite"):
        similar_sql(np.array([np.nan, 0, 0, 0]), SearchFilters(), 5, "t", D)
    with pytest.raises(ValueError, match="empty time window"):
        SearchFilters(since=datetime(2025, 2, 1), until=datetime(2025, 1, 1))


def test_vector_literal_round_trips_float32_exactly() -> None:
    vector = np.random.default_rng(0).normal(size=64).astype(np.float32)
    parsed = np.array([float(v) for v in vector_literal(vector)[1:-1].split(", ")])
    assert np.array_equal(parsed.astype(np.float32), vector)
    assert np.array_equal(parsed, vector.astype(np.float64))


# ------------------------------------------------------------------- in-memory ranking


def make_window(n: int = 200, seed: int = 0) -> CaseWindow:
    rng = np.random.default_rng(seed)
    emb = unit(rng.normal(size=(n, D)))
    if n > 7:
        emb[7] = emb[3]  # exact tie: the case_id decides
    t0 = datetime(2025, 1, 1)
    return CaseWindow.build(
        [f"c{i:04d}" for i in range(n)],
        ["A01" if i % 2 else "B02" for i in range(n)],
        ["市南区" if i % 3 else "市北区" for i in range(n)],
        [t0 + timedelta(hours=i) for i in range(n)],
        emb,
    )


def brute_force(window: CaseWindow, query: np.ndarray, keep: np.ndarray, k: int) -> list[str]:
    scores = sequential_scores(window.embeddings, query)
    rows = [(-scores[i], str(window.case_ids[i])) for i in np.flatnonzero(keep)]
    return [cid for _, cid in sorted(rows)[:k]]


def test_ranking_equals_brute_force_with_filters() -> None:
    window = make_window()
    query = window.embeddings[3]
    filters = SearchFilters(code="A01", since=datetime(2025, 1, 2), until=datetime(2025, 1, 6))
    got = rank_in_memory(query, window, filters, 10)
    keep = (
        (window.codes == "A01")
        & (window.reported_at >= np.datetime64("2025-01-02"))
        & (window.reported_at < np.datetime64("2025-01-06"))
    )
    assert [c.case_id for c in got] == brute_force(window, query, keep, 10)
    assert all(c.code == "A01" for c in got)
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)


def test_ties_are_broken_by_case_id() -> None:
    window = make_window()
    got = rank_in_memory(window.embeddings[3], window, SearchFilters(), 2)
    assert [c.case_id for c in got] == ["c0003", "c0007"]
    assert got[0].score == got[1].score
    excluded = rank_in_memory(
        window.embeddings[3], window, SearchFilters(exclude_case_id="c0003"), 1
    )
    assert excluded[0].case_id == "c0007"


def test_fewer_candidates_than_k_and_empty_windows() -> None:
    window = make_window(5)
    got = rank_in_memory(Q, window, SearchFilters(district="市北区"), 5)
    assert {c.case_id for c in got} == {"c0000", "c0003"}
    assert rank_in_memory(Q, window, SearchFilters(district="莱西市"), 5) == []
    empty = CaseWindow.build([], [], [], [], np.zeros((0, D), dtype=np.float32))
    assert rank_in_memory(Q, empty, SearchFilters(), 5) == []


def test_scores_are_the_sql_sums_and_rows_parse_back() -> None:
    window = make_window()
    got = rank_in_memory(Q, window, SearchFilters(), 3)
    row = window.embeddings[int(got[0].case_id[1:])]
    total = 0.0
    for x, y in zip(row.astype(np.float64), Q.astype(np.float64), strict=True):
        total += x * y  # arraySum's order
    assert got[0].score == total
    rows = [
        (c.case_id, c.code, c.district, c.reported_at.strftime("%Y-%m-%d %H:%M:%S"), c.score)
        for c in got
    ]
    assert similar_from_rows(rows) == got


# ------------------------------------------------ stored rows and the board's question


def _decision(**overrides: object) -> DispatchDecision:
    fields: dict[str, object] = {
        "kind": "dispatch_decision", "schema_version": 1, "input_id": "AP-7",
        "input_kind": "citizen_appeal", "channel": "hotline_12345",
        "text": "我叫某某，电话[手机号]，香港中路路灯不亮", "code": "C02",
        "event_name": "路灯故障", "urgency": "normal", "route": "S",
        "unit": "八大关街道办事处", "district": "市南区", "street": "八大关街道",
        "confidence": 0.93, "auto": True, "backend": "triton-grpc",
        "received_at": "2026-03-10T09:30:00+08:00",
        "decided_at": "2026-03-10T09:30:02.250+08:00",
    }
    fields.update(overrides)
    return DispatchDecision.model_validate(fields)


def test_embedding_row_from_a_decision() -> None:
    vector = unit(np.arange(1, 65, dtype=np.float32)[None, :])[0]
    row = embedding_row(_decision(), vector, "ngram-abc")
    assert row == {
        "case_id": "AP-7",
        "input_id": "AP-7",
        "input_kind": "citizen_appeal",
        "code": "C02",
        "event_name": "路灯故障",
        "district": "市南区",
        "street": "八大关街道",
        "unit": "八大关街道办事处",
        "auto": 1,
        "text": "我叫某某，电话[手机号]，香港中路路灯不亮",  # as decided: masked already
        "reported_at": datetime(2026, 3, 10, 1, 30),  # the report's time, naive UTC
        "decided_at": datetime(2026, 3, 10, 1, 30, 2, 250000),
        "decided_at_ms": 1773106202250,
        "embedding": [float(x) for x in vector],
        "model_version": "ngram-abc",
    }
    assert np.array(row["embedding"], dtype=np.float32).tobytes() == vector.tobytes()
    assert set(row) == set(CATALOGUE_COLUMNS)
    linked = embedding_row(
        _decision(unit=None, district=None, street=None, auto=False), vector, "v", case_id="AP-1"
    )
    assert (linked["case_id"], linked["unit"], linked["district"], linked["auto"]) == (
        "AP-1", "", "", 0
    )


@pytest.mark.parametrize(
    ("vector", "version", "match"),
    [
        ([0.1, float("nan")], "v", "finite"),
        ([], "v", "non-empty"),
        ([1.0, 0.0], "", "model_version"),
    ],
)
def test_embedding_row_refuses_bad_vectors(vector: list[float], version: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        embedding_row(_decision(), vector, version)


def test_decision_filters() -> None:
    filters = decision_filters(_decision(), window=timedelta(days=30))
    assert filters == SearchFilters(
        code="C02", district="市南区", since=datetime(2026, 2, 8, 1, 30),
        until=datetime(2026, 3, 10, 1, 30), exclude_case_id="AP-7",
    )
    loose = decision_filters(_decision(district=None), by_code=False)
    assert (loose.code, loose.district) == (None, None)
    assert loose.since == datetime(2025, 3, 10, 1, 30)
    with pytest.raises(ValueError, match="window"):
        decision_filters(_decision(), window=timedelta(0))


def test_similar_cases_sql_shape() -> None:
    filters = SearchFilters(code="A01", district="市南区", exclude_case_id="c-1")
    sql = similar_cases_sql(Q, filters, 5, "case_embeddings", "dispatch_feedback", D)
    inner = similar_sql(Q, filters, 5, "case_embeddings", D)
    # The same scores and filters as similar_sql, one report per case, top k before the join.
    assert inner.split(" ORDER BY ")[0].split(" AS score ")[1] in sql
    top = "ORDER BY score DESC, case_id ASC, input_id ASC LIMIT 1 BY case_id LIMIT 5) AS past"
    assert top in sql
    assert sql.count(" JOIN ") == 1 and "ANY LEFT JOIN (SELECT input_id, count() AS verdicts" in sql
    assert "FROM dispatch_feedback GROUP BY input_id) AS feedback USING input_id" in sql
    assert sql.endswith("ORDER BY score DESC, case_id ASC")
    assert "cosineDistance" not in sql and "dotProduct" not in sql
    for bad in ("x; DROP TABLE y", "a.b.c", ""):
        with pytest.raises(ValueError, match="identifier"):
            similar_cases_sql(Q, filters, 5, feedback=bad, dims=D)
    with pytest.raises(ValueError, match="k must be"):
        similar_cases_sql(Q, filters, 0, dims=D)


def test_past_cases_parse_from_both_engines_forms() -> None:
    chdb_row = ("c3", "p4", "A01", "暴露垃圾", "市南区", "U3", "confirmed",
                "2026-03-03 09:00:00", 0.5, 0.97)
    server_row = ("p2", "p2", "A01", "暴露垃圾", "市南区", "U2", "",
                  datetime(2026, 3, 5, 8, 0), None, 0.95)
    first, second = past_cases_from_rows([chdb_row, server_row])
    assert first == PastCase("c3", "p4", "A01", "暴露垃圾", "市南区", "U3", "confirmed",
                             datetime(2026, 3, 3, 9, 0), 0.5, 0.97)
    assert second.hours_to_verdict is None and second.reported_at == datetime(2026, 3, 5, 8)


# ------------------------------------------------------------- a stored report's search


def test_similar_cases_sql_with_text_adds_it_last() -> None:
    filters = SearchFilters(code="A01")
    plain = similar_cases_sql(Q, filters, 5, dims=D)
    with_text = similar_cases_sql(Q, filters, 5, dims=D, with_text=True)
    assert "text" not in plain
    assert with_text == plain.replace("reported_at, arraySum", "reported_at, text, arraySum", 1)\
        .replace("AS hours_to_verdict, score FROM", "AS hours_to_verdict, score, text FROM", 1)
    row = ("p2", "p2", "A01", "暴露垃圾", "市南区", "U2", "", "2026-03-05 08:00:00", None, 0.95)
    assert past_cases_from_rows([row])[0].text is None
    assert past_cases_from_rows([(*row, "垃圾")])[0].text == "垃圾"


def test_stored_embedding_sql_reads_one_report_safely() -> None:
    from processors.similar import stored_embedding_sql

    assert stored_embedding_sql("AP-7") == (
        "SELECT case_id, input_id, code, district, reported_at, embedding "
        "FROM case_embeddings WHERE input_id = 'AP-7' LIMIT 1"
    )
    for bad in ("x' OR 1=1 --", "a b", "", "AP-7\n", "a" * 65):
        with pytest.raises(ValueError, match="input_id"):
            stored_embedding_sql(bad)
    with pytest.raises(ValueError, match="identifier"):
        stored_embedding_sql("AP-7", table="x; DROP TABLE y")


def test_stored_filters_are_decision_filters_of_the_stored_row() -> None:
    from processors.similar import StoredEmbedding, stored_embedding_from_rows, stored_filters

    assert stored_embedding_from_rows([]) is None
    chdb = ("c-9", "AP-7", "C02", "市南区", "2026-03-10 01:30:00", [0.5, 0.5])
    server = ("c-9", "AP-7", "C02", "市南区", datetime(2026, 3, 10, 1, 30), (0.5, 0.5))
    stored = stored_embedding_from_rows([chdb])
    assert stored == stored_embedding_from_rows([server]) == StoredEmbedding(
        "c-9", "AP-7", "C02", "市南区", datetime(2026, 3, 10, 1, 30), (0.5, 0.5))
    assert stored is not None
    # The same filters as decision_filters, but the whole case is left out.
    assert stored_filters(stored, window=timedelta(days=30)) == SearchFilters(
        code="C02", district="市南区", since=datetime(2026, 2, 8, 1, 30),
        until=datetime(2026, 3, 10, 1, 30), exclude_case_id="c-9",
    )
    unlinked = StoredEmbedding("", "AP-7", "", "", datetime(2026, 3, 10, 1, 30), (1.0,))
    loose = stored_filters(unlinked)
    assert (loose.code, loose.district, loose.exclude_case_id) == (None, None, "AP-7")
    assert loose.since == datetime(2025, 3, 10, 1, 30)
    with pytest.raises(ValueError, match="window"):
        stored_filters(stored, window=timedelta(0))


def test_moved_embeddings_are_written_again_under_their_new_case():
    from processors.similar import EMBEDDING_COLUMNS, moved_embedding_rows, moved_embeddings_sql

    sql = moved_embeddings_sql(["r-2", "r-1", "r-2"])
    assert sql.endswith("FROM case_embeddings WHERE input_id IN ('r-1', 'r-2')")
    with pytest.raises(ValueError):
        moved_embeddings_sql(["x' OR '1'='1"])
    # As chDB's JSON gives a row: times as text, numbers as text or numbers.
    stored = ["old-case", "r-1", "citizen_appeal", "E02", "路灯", "市南区", "", "u", "1",
              "masked", "2026-11-20 08:00:00", "2026-11-20 08:00:01", "1795651201000",
              [0.5, "0.25"], "v1"]
    [row] = moved_embedding_rows([stored], {"r-1": "new-case"})
    assert list(row) == list(EMBEDDING_COLUMNS)
    assert (row["case_id"], row["auto"], row["decided_at_ms"], row["embedding"]) == (
        "new-case", 1, 1795651201000, [0.5, 0.25])
    assert row["reported_at"] == datetime(2026, 11, 20, 8, 0, 0)
