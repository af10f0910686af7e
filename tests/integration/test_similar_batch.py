"""citystream similar against real services: the session's trained case embedder served by
a real tritonserver (``--via triton``: the same answers as in-process, and Triton did the
embedding), and Debian's clickhouse-server 18.16 (``--clickhouse``: the same answers as
chDB, in a database of the run's own that is dropped unless kept)."""

from __future__ import annotations

import argparse
import json
import random
import re
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.services import ClickHouseServer, free_ports
from infra.triton import TritonServer
from models.simulator import generate_history
from schemas.domain import Domain
from streams.clickhouse import ServerWarehouse
from streams.settings import Settings
from streams.similar_cli import cmd_similar, register

pytestmark = pytest.mark.integration

K = 4
HOSTILE = [
    "{not json",
    json.dumps({"id": "h-empty", "text": ""}),
    json.dumps({"id": "h-emoji", "text": "😀🚧🔥"}),
    json.dumps({"id": "h-huge", "text": "污水外溢" * 25_000}),
    json.dumps({"id": "h-code", "text": "路灯不亮", "code": "'; DROP TABLE x; --"}),
    json.dumps({"id": "h-since", "text": "路灯不亮", "since": "2025-07-01"}),
    json.dumps({"text": "路灯不亮"}),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """300 simulated past cases (with the unit that handled each and how long it took),
    and queries: 30 later reports with and without the live filters, 5 texts equal to a
    past case's, and hostile lines."""
    root = tmp_path_factory.mktemp("similar-batch")
    domain = Domain.load(Settings().domain_file)
    past = generate_history(domain, 300, seed=811, start=date(2025, 1, 1), end=date(2025, 6, 30))
    later = generate_history(domain, 30, seed=812, start=date(2025, 7, 1), end=date(2025, 7, 31))
    rng = random.Random(813)
    cases = {
        r.record_id: {
            "id": r.record_id, "text": r.text, "time": r.reported_at.isoformat(),
            "code": r.code, "district": r.district, "resolution": r.unit,
            "hours_to_close": round(rng.uniform(0.5, 72), 2),
        }
        for r in past
    }
    queries: list[dict[str, Any]] = []
    for r in later:
        since = (r.reported_at - timedelta(days=60)).isoformat()
        queries += [
            {"id": f"{r.record_id}-all", "text": r.text},
            {"id": f"{r.record_id}-filtered", "text": r.text, "code": r.code,
             "district": r.district},
            {"id": f"{r.record_id}-since", "text": r.text, "since": since},
        ]
    same = [past[i] for i in (0, 50, 100, 150, 299)]
    queries += [{"id": f"same-{r.record_id}", "text": r.text} for r in same]
    lines = [json.dumps(q, ensure_ascii=False) for q in queries] + HOSTILE
    (root / "cases.jsonl").write_text(
        "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases.values()), "utf-8")
    (root / "queries.jsonl").write_text("".join(line + "\n" for line in lines), "utf-8")
    return {"root": root, "cases": cases, "queries": {q["id"]: q for q in queries},
            "same": [r.record_id for r in same]}


def _run(files: dict[str, Any], out: Path, settings: Settings, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "similar", "--cases", str(files["root"] / "cases.jsonl"),
        "--input", str(files["root"] / "queries.jsonl"), "--output", str(out),
        "--k", str(K), *extra,
    ])
    return cmd_similar(args, settings)


def _answers(path: Path) -> dict[str, list[dict[str, Any]]]:
    return {o["id"]: o["similar"] for o in map(json.loads, path.read_text("utf-8").splitlines())}


def _check_known_answers(files: dict[str, Any], answers: dict[str, list[dict[str, Any]]]) -> None:
    cases, queries = files["cases"], files["queries"]
    assert list(answers) == list(queries)  # every good query answered, in input order
    for past_id in files["same"]:
        found = answers[f"same-{past_id}"]
        top = [s["id"] for s in found if s["score"] >= 0.9999]  # the same text: score 1
        assert past_id in top and found[0]["score"] >= 0.9999, found
        assert top == sorted(top)  # equal scores: by id
    # An unfiltered query finds K (300 candidates); a filtered one may find fewer.
    assert all(len(answers[q]) == K for q in answers if q.endswith("-all"))
    for query_id, found in answers.items():
        assert len(found) <= K
        scores = [s["score"] for s in found]
        assert scores == sorted(scores, reverse=True)
        query = queries[query_id]
        for item in found:
            case = cases[item["id"]]
            # How each past case was handled comes back as it was given.
            assert item["resolution"] == case["resolution"]
            assert item["hours_to_close"] == pytest.approx(case["hours_to_close"], abs=0.005)
            if "code" in query:
                assert (case["code"], case["district"]) == (query["code"], query["district"])
            if "since" in query:
                assert case["time"] >= query["since"]  # both +08:00: text order is time order
    # The filters do exclude: some unfiltered answers hold cases the filtered ones may not.
    assert any(
        any(cases[s["id"]]["code"] != queries[q.replace("-all", "-filtered")]["code"]
            for s in answers[q])
        for q in answers if q.endswith("-all")
    )


def _rejected_lines(path: Path) -> list[tuple[int, str]]:
    rows = [json.loads(x) for x in path.read_text("utf-8").splitlines()]
    return [(r["line"], r["reason"].split(":")[0]) for r in rows]


def _inferences(triton: TritonServer, model: str) -> int:
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    pattern = rf'^nv_inference_request_success\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
    return sum(int(float(v)) for v in re.findall(pattern, text, re.MULTILINE))


def test_similar_through_triton_gives_the_in_process_answers(
    trained_models: Any, dispatch_triton: TritonServer, tmp_path: Path, files: dict[str, Any]
) -> None:
    settings = Settings(model_repository=trained_models.repository)
    assert _run(files, tmp_path / "local.jsonl", settings) == 0
    before = _inferences(dispatch_triton, "case_embedder")
    assert _run(files, tmp_path / "triton.jsonl", settings,
                "--via", "triton", "--triton-url", dispatch_triton.grpc_url) == 0
    # Triton embedded the past cases and the queries (no in-process fallback exists).
    assert _inferences(dispatch_triton, "case_embedder") - before >= (300 + 95) // 32
    local, served = _answers(tmp_path / "local.jsonl"), _answers(tmp_path / "triton.jsonl")
    _check_known_answers(files, served)
    assert list(served) == list(local)
    for query_id, found in served.items():
        assert [s["id"] for s in found] == [s["id"] for s in local[query_id]], query_id
        for a, b in zip(found, local[query_id], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=2e-4)
    expected_rejects = [(96, "not a JSON line"), (97, "text"), (98, "text"), (99, "text"),
                        (100, "code"), (101, "since"), (102, "missing or not a string")]
    assert _rejected_lines(tmp_path / "triton.jsonl.rejects.jsonl") == expected_rejects


@pytest.mark.parametrize(
    ("route", "said"),
    [
        # --via triton has no in-process fallback: no server is an error.
        (["--via", "triton", "--triton-url", "127.0.0.1:{port}"], "no case embedder"),
        (["--clickhouse", "clickhouse://default@127.0.0.1:{port}"], "ClickHouse: "),
        (["--clickhouse", "http://127.0.0.1:{port}"], "--clickhouse: "),
    ],
)
def test_an_unreachable_service_stops_the_run_before_any_output(
    trained_models: Any, tmp_path: Path, files: dict[str, Any],
    capsys: pytest.CaptureFixture[str], route: list[str], said: str,
) -> None:
    (port,) = free_ports(1)
    code = _run(files, tmp_path / "out.jsonl", Settings(model_repository=trained_models.repository),
                *(part.format(port=port) for part in route))
    assert code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def _similar_databases(server: ClickHouseServer) -> set[str]:
    admin = ServerWarehouse(server.url, "default")
    try:
        names = {str(r[0]) for r in admin.query("SHOW DATABASES").rows}
        return {n for n in names if n.startswith("similar_")}
    finally:
        admin.close()


def test_similar_on_the_server_gives_the_chdb_answers_and_drops_its_database(
    trained_models: Any, clickhouse_server: ClickHouseServer, tmp_path: Path,
    files: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(model_repository=trained_models.repository)
    assert _run(files, tmp_path / "chdb.jsonl", settings) == 0
    before = _similar_databases(clickhouse_server)
    assert _run(files, tmp_path / "server.jsonl", settings,
                "--clickhouse", clickhouse_server.url) == 0
    on_server = _answers(tmp_path / "server.jsonl")
    _check_known_answers(files, on_server)
    # The same query on 18.16 and on chDB: the same cases, order and scores.
    assert on_server == _answers(tmp_path / "chdb.jsonl")
    assert _similar_databases(clickhouse_server) == before  # dropped

    capsys.readouterr()
    assert _run(files, tmp_path / "kept.jsonl", settings,
                "--clickhouse", clickhouse_server.url, "--keep-database") == 0
    (database,) = re.findall(r"past cases in database (similar_\w+)", capsys.readouterr().err)
    kept = ServerWarehouse(clickhouse_server.url, database)
    try:
        assert kept.query("SELECT count() FROM case_embeddings").scalar() == 300
        assert kept.query(
            "SELECT count() FROM dispatch_feedback WHERE verdict = 'confirmed'"
        ).scalar() == 300
        assert kept.query("SELECT DISTINCT input_kind FROM case_embeddings").rows == [
            ("past_case",)
        ]
    finally:
        kept.command(f"DROP DATABASE IF EXISTS {database}")
        kept.close()
