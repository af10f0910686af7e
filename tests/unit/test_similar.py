from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from processors.similar import (
    CaseWindow,
    SearchFilters,
    quote_string,
    rank_in_memory,
    sequential_scores,
    similar_from_rows,
    similar_sql,
    vector_literal,
)

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
