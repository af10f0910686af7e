"""citystream similar: past-case and query lines (hostile ones too), the rows they become,
and the command end to end on chDB with a small random-weight case embedder (known
answers: a query equal to a past case finds it first with score 1, filters exclude, k is
kept, ties go by id, outputs follow the input)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from models.embedding.export import MODEL_NAME, build_ngram_embedder, save_model
from models.features import BUCKETS
from models.repository import write_model_repository
from processors.similar import MAX_K, PastCase, SearchFilters
from processors.similar_batch import (
    ID_LOOKUP,
    NOTHING_TO_EMBED,
    REPEATED_ID,
    PastCaseLine,
    QueryLine,
    case_row,
    closing_row,
    embed_parsed,
    parse_case,
    parse_query,
    refuse_repeats,
    result_line,
    stored_ids_sql,
)
from schemas.catalogue import view_doc
from streams.batch import InputLine, Rejected
from streams.settings import Settings
from streams.similar_cli import cmd_similar, register

EMOJI = "😀🚧🔥 !!!"
HUGE = "市北区台东街道华阳里小区污水井堵塞，污水外溢。" * 4200  # ~100 kB of UTF-8
CASE = {"id": "p1", "text": "香港中路路灯不亮，电话13912345678",
        "time": "2026-03-01T20:00:00+08:00"}


def case_of(**fields: object) -> PastCaseLine | Rejected:
    return parse_case(InputLine(7, {**CASE, **fields}), 4000)


def query_of(**fields: object) -> QueryLine | Rejected:
    return parse_query(InputLine(3, {"id": "q", "text": "路灯不亮", **fields}), 4000)


# ---------------------------------------------------------------------------- past cases


def test_a_past_case_is_stored_as_ingest_stores_a_text() -> None:
    case = case_of(code="E02", district="市南区", resolution="市南区城市管理局",
                   hours_to_close=5.5)
    assert case == PastCaseLine(
        id="p1", text="香港中路路灯不亮,电话[手机号]",  # normalised and masked
        reported_at=datetime(2026, 3, 1, 12, 0), code="E02", district="市南区",
        resolution="市南区城市管理局", hours_to_close=5.5,
    )
    assert case_of() == PastCaseLine("p1", "香港中路路灯不亮,电话[手机号]",
                                    datetime(2026, 3, 1, 12, 0), None, None, None, None)


BAD_CASES: list[tuple[dict[str, object], str]] = [
    ({"text": ""}, "text: empty after normalisation"),
    ({"text": "\u200b \u3000"}, "text: empty after normalisation"),
    ({"text": HUGE}, "characters, limit 4000"),
    ({"time": "2026-03-01 20:00:00"}, "time: Input should have timezone info (ISO 8601"),
    ({"time": "yesterday"}, "time: must be an ISO 8601 string with a UTC offset"),
    ({"time": 1772366400}, "time: must be an ISO 8601 string with a UTC offset"),
    ({"time": "1960-01-01T00:00:00+00:00"}, "time: must lie between 1970 and 2105"),
    ({"id": ""}, "id: must be 1 to 100 characters"),
    ({"id": "a\nb"}, "id: must be 1 to 100 characters"),
    ({"id": "x" * 101}, "id: must be 1 to 100 characters"),
    ({"code": "a01"}, "code: 'a01' is not an event code"),
    ({"code": "A01\n"}, "is not an event code"),
    ({"code": 12}, "code: must be a string, got int"),
    ({"district": "市南\x00区"}, "district: district"),
    ({"district": ""}, "district: district"),
    ({"resolution": ["a"]}, "resolution: must be a string, got list"),
    ({"hours_to_close": -1}, "hours_to_close: must be a number of hours, 0 or more"),
    ({"hours_to_close": True}, "hours_to_close: must be a number of hours"),
    ({"hours_to_close": "5"}, "hours_to_close: must be a number of hours"),
    ({"hours_to_close": float("nan")}, "hours_to_close: must be a number of hours"),
    ({"hours_to_close": float("inf")}, "hours_to_close: must be a number of hours"),
    ({"hours_to_close": 10**400}, "hours_to_close: must be a number of hours"),
    ({"time": "2105-12-30T00:00:00+00:00", "hours_to_close": 48},
     "hours_to_close: must lie between 1970 and 2105"),
]


def test_optional_fields_may_be_null() -> None:
    case = case_of(code=None, district=None, resolution=None, hours_to_close=None)
    assert isinstance(case, PastCaseLine) and case.code is case.hours_to_close is None


def test_the_row_is_the_live_row_and_the_closing_a_verdict() -> None:
    case = case_of(code="E02", district="市南区", resolution="市南区城市管理局",
                   hours_to_close=5.5)
    assert isinstance(case, PastCaseLine)
    vector = np.full(64, 0.125, dtype=np.float32)
    row = case_row(case, vector, "ngram-abc")
    # The columns analysts are told the view holds: what the live path writes.
    assert set(row) == set(view_doc("case_embeddings").columns)  # type: ignore[union-attr]
    assert {k: row[k] for k in ("case_id", "input_id", "input_kind", "code", "district",
                                "unit", "auto", "text", "reported_at", "model_version")} == {
        "case_id": "p1", "input_id": "p1", "input_kind": "past_case", "code": "E02",
        "district": "市南区", "unit": "市南区城市管理局", "auto": 0,
        "text": "香港中路路灯不亮,电话[手机号]", "reported_at": datetime(2026, 3, 1, 12, 0),
        "model_version": "ngram-abc",
    }
    assert row["decided_at_ms"] == int(datetime.fromisoformat(CASE["time"]).timestamp() * 1000)
    assert closing_row(case) == {
        "feedback_id": "closed-p1", "input_id": "p1", "verdict": "confirmed",
        "unit": "市南区城市管理局", "code": "E02", "given_at": datetime(2026, 3, 1, 17, 30),
    }
    bare = case_of()
    assert isinstance(bare, PastCaseLine) and closing_row(bare) is None
    assert (case_row(bare, vector, "v")["code"], case_row(bare, vector, "v")["unit"]) == ("", "")


def test_repeated_ids_are_refused_after_the_first() -> None:
    lines = [case_of(id="a"), case_of(id="b"), Rejected("bad"), case_of(id="a"),
             case_of(id="old"), case_of(id="b")]
    asked: list[list[str]] = []

    def stored(ids: list[str]) -> set[str]:
        asked.append(ids)
        return {"old"} & set(ids)

    out = refuse_repeats(lines, stored)
    assert asked == [["a", "b", "old"]]
    assert [o.id if isinstance(o, PastCaseLine) else o.reason for o in out] == [
        "a", "b", "bad", REPEATED_ID, REPEATED_ID, REPEATED_ID
    ]
    many = [case_of(id=f"c{i}") for i in range(ID_LOOKUP + 1)]
    asked.clear()
    refuse_repeats(many, stored)
    assert [len(a) for a in asked] == [ID_LOOKUP, 1]


def test_stored_ids_lookup_quotes_and_is_bounded() -> None:
    assert stored_ids_sql(["a", "o'b\\"]) == (
        "SELECT DISTINCT input_id FROM case_embeddings_log WHERE input_id IN ('a', 'o\\'b\\\\')"
    )
    for ids in ([], ["x"] * (ID_LOOKUP + 1)):
        with pytest.raises(ValueError, match="ids at a time"):
            stored_ids_sql(ids)


# ------------------------------------------------------------------------------- queries


def test_a_query_is_its_stored_text_and_the_live_filters() -> None:
    assert query_of() == QueryLine("q", "路灯不亮", SearchFilters())
    assert query_of(code="E02", district="市南区", since="2026-01-01T08:00:00+08:00") == (
        QueryLine("q", "路灯不亮", SearchFilters(code="E02", district="市南区",
                                            since=datetime(2026, 1, 1, 0, 0)))
    )


BAD_QUERIES: list[tuple[dict[str, object], str]] = [
    ({"text": ""}, "text: empty after normalisation"),
    ({"text": HUGE}, "characters, limit 4000"),
    ({"code": "ZZZ"}, "code: 'ZZZ' is not an event code"),
    ({"code": "A1"}, "code: 'A1' is not an event code"),
    ({"since": "2026-01-01"}, "since: must be an ISO 8601 string with a UTC offset"),
    ({"since": "2026-13-01T00:00:00+08:00"}, "since: Input should be a valid datetime"),
    ({"since": 0}, "since: must be an ISO 8601 string"),
    ({"district": "\x1b[31m"}, "district: district"),
]


@pytest.mark.parametrize(
    ("parse", "fields", "reason"),
    [(case_of, *bad) for bad in BAD_CASES] + [(query_of, *bad) for bad in BAD_QUERIES],
)
def test_a_bad_line_is_refused_with_the_field_and_why(
    parse: Callable[..., object], fields: dict[str, object], reason: str
) -> None:
    result = parse(**fields)
    assert isinstance(result, Rejected), result
    assert reason in result.reason


def test_a_text_with_nothing_to_embed_is_refused_and_the_rest_keep_their_order() -> None:
    parsed = [query_of(text="a"), Rejected("bad"), query_of(text=EMOJI), query_of(text="c")]
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        # The embedder's zero row for a text without n-grams.
        return np.array([[1.0, 0.0] if t != EMOJI else [0.0, 0.0] for t in texts])

    out = embed_parsed(parsed, embed)
    assert calls == [["a", EMOJI, "c"]]  # one call for the chunk's good lines
    assert [o.reason if isinstance(o, Rejected) else o[0].text for o in out] == [
        "a", "bad", NOTHING_TO_EMBED, "c"
    ]
    assert embed_parsed([Rejected("x")], embed) == [Rejected("x")] and len(calls) == 1


def test_the_answer_lists_ids_and_scores_best_first_with_what_is_known() -> None:
    def past(case_id: str, score: float, unit: str = "", hours: float | None = None) -> PastCase:
        return PastCase(case_id, case_id, "E02", "", "市南区", unit, "", datetime(2026, 1, 1),
                        hours, score)

    found = [past("p1", 0.999999, "市南区城市管理局", 5.5), past("p2", 0.81234, hours=1 / 3),
             past("p3", 0.5, hours=float("nan"))]
    assert result_line("q", found) == {"id": "q", "similar": [
        {"id": "p1", "score": 1.0, "resolution": "市南区城市管理局", "hours_to_close": 5.5},
        {"id": "p2", "score": 0.8123, "hours_to_close": 0.33},
        {"id": "p3", "score": 0.5},
    ]}
    assert result_line("q", []) == {"id": "q", "similar": []}


# ------------------------------------------------------------------- the command, on chDB


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with a 64-d case_embedder of seeded random weights (the answers
    below hold whatever the weights: equal texts, filters, ties, k)."""
    weights = np.random.default_rng(8).normal(0, 1, (BUCKETS, 64)).astype(np.float32)
    root = tmp_path_factory.mktemp("similar-batch")
    path = save_model(build_ngram_embedder(weights), root / "onnx" / f"{MODEL_NAME}.onnx")
    write_model_repository(root / "repository", [path])
    return root / "repository"


PAST = [
    {"id": "p-lamp", "text": "香港中路路灯不亮，晚上很黑", "time": "2026-03-01T20:00:00+08:00",
     "code": "E02", "district": "市南区", "resolution": "市南区城市管理局", "hours_to_close": 5.5},
    {"id": "p-lamp-north", "text": "香港中路路灯不亮，晚上很黑",
     "time": "2026-02-01T20:00:00+08:00", "code": "E02", "district": "市北区"},
    {"id": "p-rubbish", "text": "小区门口垃圾堆了三天没人清理", "time": "2026-02-10T09:00:00+08:00",
     "code": "A01", "district": "市南区"},
    {"id": "p-tie-b", "text": "井盖丢失，行人容易掉下去", "time": "2026-01-05T09:00:00+08:00",
     "code": "E01", "district": "李沧区"},
    {"id": "p-tie-a", "text": "井盖丢失，行人容易掉下去", "time": "2026-01-06T09:00:00+08:00",
     "code": "E01", "district": "李沧区"},
    {"id": "p-noise", "text": "工地夜间施工噪音扰民", "time": "2025-12-01T23:00:00+08:00"},
]
HOSTILE_PAST = [
    '{"id": "p-bad-json", "text": ',
    '{"id": "p-no-time", "text": "路灯不亮"}',
    json.dumps({"id": "p-emoji", "text": EMOJI, "time": "2026-01-01T00:00:00+08:00"}),
    json.dumps({**PAST[2], "text": "重复的编号"}),  # p-rubbish again: the first is kept
    json.dumps({"id": "p-bad-code", "text": "路灯不亮", "time": "2026-01-01T00:00:00+08:00",
                "code": "lamp"}),
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _args(tmp_path: Path, *extra: str, cases: Path | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    cases = cases or _write(tmp_path / "cases.jsonl",
                            [json.dumps(c, ensure_ascii=False) for c in PAST] + HOSTILE_PAST)
    return parser.parse_args(["similar", "--cases", str(cases),
                              "--output", str(tmp_path / "out.jsonl"), *extra])


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _run(tmp_path: Path, repository: Path, queries: list[str], *extra: str) -> tuple[
    int, list[dict[str, object]], list[dict[str, object]]
]:
    source = _write(tmp_path / "queries.jsonl", queries)
    code = cmd_similar(_args(tmp_path, "--input", str(source), *extra),
                       Settings(model_repository=repository))
    rejects = tmp_path / "out.jsonl.rejects.jsonl"
    return code, _jsonl(tmp_path / "out.jsonl"), _jsonl(rejects) if rejects.exists() else []


def test_the_command_finds_known_answers_in_input_order(
    tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lamp = PAST[0]["text"]
    queries = [
        json.dumps({"id": "same-text", "text": lamp}),
        '{"id": "bad-json"',
        json.dumps({"id": "by-code", "text": lamp, "code": "A01"}),
        json.dumps({"id": "by-district", "text": lamp, "district": "市北区"}),
        json.dumps({"id": "since", "text": lamp, "since": "2026-02-10T09:00:00+08:00"}),
        json.dumps({"id": "empty", "text": ""}),
        json.dumps({"id": "ties", "text": "井盖丢失，行人容易掉下去", "code": "E01"}),
        json.dumps({"id": "huge", "text": HUGE}),
        json.dumps({"id": "emoji", "text": EMOJI}),
        json.dumps({"id": "bad-code", "text": lamp, "code": "路灯"}),
        json.dumps({"id": "bad-since", "text": lamp, "since": "last week"}),
        json.dumps({"text": lamp}),
        json.dumps({"id": "nothing-passes", "text": lamp, "code": "K03"}),
        json.dumps({"id": "close", "text": "香港中路的路灯不亮了"}),
    ]
    code, out, rejects = _run(tmp_path, repository, queries, "--k", "3")
    assert code == 0
    answers = {o["id"]: o["similar"] for o in out}
    assert [o["id"] for o in out] == ["same-text", "by-code", "by-district", "since", "ties",
                                      "nothing-passes", "close"]  # input order
    # The same text: both past cases with it first, score 1 (tied, so by id), then others.
    same = answers["same-text"]
    assert [s["id"] for s in same[:2]] == ["p-lamp", "p-lamp-north"]
    assert same[0]["score"] == same[1]["score"] == pytest.approx(1.0, abs=1e-4)
    assert same[0]["resolution"] == "市南区城市管理局" and same[0]["hours_to_close"] == 5.5
    assert "resolution" not in same[1] and "hours_to_close" not in same[1]
    assert len(same) == 3 and same[2]["score"] < 0.99  # k = 3
    assert [s["id"] for s in answers["by-code"]] == ["p-rubbish"]  # the only A01 case
    assert [s["id"] for s in answers["by-district"]] == ["p-lamp-north"]
    # since is inclusive: p-rubbish is at exactly that time; p-lamp-north is before it.
    assert [s["id"] for s in answers["since"]] == ["p-lamp", "p-rubbish"]
    assert [s["id"] for s in answers["ties"]] == ["p-tie-a", "p-tie-b"]  # equal: by id
    assert answers["nothing-passes"] == []
    assert answers["close"][0]["id"] == "p-lamp"
    scores = [s["score"] for s in answers["close"]]
    assert scores == sorted(scores, reverse=True) and scores[0] < 0.999
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejects] == [
        (2, "not a JSON line"), (6, "text"), (8, "text"), (9, "text"), (10, "code"),
        (11, "since"), (12, "missing or not a string"),
    ]
    assert rejects[3]["reason"] == NOTHING_TO_EMBED
    cases_rejects = _jsonl(tmp_path / "out.jsonl.cases.rejects.jsonl")
    assert [(r["line"], r["reason"].split(":")[0]) for r in cases_rejects] == [
        (7, "not a JSON line"), (8, "missing or not a string"), (9, "text"), (10, "id"),
        (11, "code"),
    ]
    assert cases_rejects[3]["reason"] == REPEATED_ID
    err = capsys.readouterr().err
    assert "citystream similar (past cases): 6 processed, 5 rejected" in err
    assert "citystream similar: 7 processed, 7 rejected" in err
    # The rejected past case p-rubbish's repeat left the first line's text in place.
    assert answers["by-code"][0]["score"] < 0.99


def test_strict_fails_on_any_reject_and_no_loadable_case_stops_the_run(
    tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = [json.dumps({"id": "q", "text": "路灯不亮"})]
    code, out, rejects = _run(tmp_path, repository, query, "--strict")
    assert (code, len(out), rejects) == (1, 1, [])  # the past cases' rejects count too
    only_bad = _write(tmp_path / "bad-cases.jsonl", [*HOSTILE_PAST[:3], HOSTILE_PAST[4]])
    settings = Settings(model_repository=repository)
    source = _write(tmp_path / "q.jsonl", query)
    assert cmd_similar(_args(tmp_path, "--input", str(source), cases=only_bad), settings) == 2
    err = capsys.readouterr().err
    assert "citystream similar (past cases): 0 processed, 4 rejected" in err
    assert f"citystream similar: no past case could be loaded from {only_bad}" in err
    assert cmd_similar(_args(tmp_path, "--input", "-", cases=Path("-")), settings) == 2
    missing = tmp_path / "nope.jsonl"
    assert cmd_similar(_args(tmp_path, "--input", str(source), cases=missing), settings) == 2
    assert cmd_similar(_args(tmp_path, "--input", str(missing)), settings) == 2
    assert capsys.readouterr().err.count(f"cannot read {missing}: No such file") == 2


def test_nothing_searched_exits_non_zero(tmp_path: Path, repository: Path) -> None:
    code, out, rejects = _run(tmp_path, repository, [json.dumps({"id": "e", "text": EMOJI})])
    assert (code, out, [r["reason"] for r in rejects]) == (1, [], [NOTHING_TO_EMBED])


def test_a_missing_model_stops_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "q.jsonl", [json.dumps({"id": "q", "text": "路灯"})])
    code = cmd_similar(_args(tmp_path, "--input", str(source)),
                       Settings(model_repository=tmp_path / "empty"))
    assert code == 2 and "no case embedder" in capsys.readouterr().err


def test_help_documents_the_formats_and_k_is_bounded(
    capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["similar", "--help"])
    text = capsys.readouterr().out
    for part in ("Past cases", "In:", "Out:", "--cases", "--k", "--clickhouse",
                 "--keep-database", "--rejects", "--strict", "--via", str(MAX_K)):
        assert part in text, part
    base = ["similar", "--cases", "c", "--input", "i", "--output", "o"]
    assert parser.parse_args(base).k == 5
    assert parser.parse_args([*base, "--k", str(MAX_K)]).k == MAX_K
    for bad in ("0", str(MAX_K + 1), "x"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--k", bad])


def test_a_model_failing_mid_run_stops_it_with_what_was_written(
    tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models.embedding.serving import CaseEmbedder
    from processors.dispatch import ModelsUnavailable

    calls = {"n": 0}
    embed = CaseEmbedder.embed

    def failing_after_the_past_cases(self: CaseEmbedder, texts: list[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 1:  # the first call embeds the past cases (one chunk)
            raise ModelsUnavailable("case_embedder: triton-grpc: deadline exceeded")
        return embed(self, texts)

    monkeypatch.setattr(CaseEmbedder, "embed", failing_after_the_past_cases)
    code, out, rejects = _run(tmp_path, repository, [json.dumps({"id": "q", "text": "路灯"})])
    assert (code, out, rejects) == (1, [], [])
    assert "stopped, the models did not answer: case_embedder" in capsys.readouterr().err
