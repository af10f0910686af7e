"""``citystream eval``'s glue for the issue-6 parts: argument parsing, the plan, the result
envelope, decoy counting and the markdown summaries (no models, no chDB here)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from models.eval_suite import (
    PARTS,
    EvalPlan,
    add_eval_arguments,
    decoys_masked,
    envelope,
    eval_plan,
    masking_markdown,
    merge_markdown,
    parse_parts,
    report_markdown,
    similar_markdown,
    timings_markdown,
    write_result,
)
from streams.cli import build_parser


# --- parts and arguments ----------------------------------------------------------------------
def test_parse_parts_all_and_lists_in_canonical_order() -> None:
    assert parse_parts("all") == PARTS
    assert parse_parts(" report , masking,report") == ("masking", "report")
    assert parse_parts("DISPATCH") == ("dispatch",)


@pytest.mark.parametrize("value", ["", ",", "bogus", "masking,bogus", "all,merge"])
def test_parse_parts_refuses_what_it_does_not_know(value: str) -> None:
    with pytest.raises(ValueError):
        parse_parts(value)


def test_eval_defaults_keep_the_dispatch_only_command() -> None:
    args = build_parser().parse_args(["eval"])
    plan = eval_plan(args)
    assert plan.parts == ("dispatch",)
    assert plan.out_dir == Path("bench-results")
    assert plan.similar.with_use is False
    assert (plan.masking.seed, plan.masking.cases) == (7, 2000)
    assert (plan.merge.seed, plan.merge.incidents, plan.merge.background) == (1, 200, 3000)
    assert plan.report.end == date(2026, 11, 20) and plan.report.pdf


def test_eval_arguments_make_the_plan() -> None:
    args = build_parser().parse_args([
        "eval", "--parts", "all", "--out-dir", "/tmp/x", "--with-use", "--masking-seed", "3",
        "--masking-cases", "50", "--merge-days", "2", "--similar-past", "100",
        "--report-reports", "10", "--report-end", "2026-01-02", "--report-no-pdf",
    ])  # fmt: skip
    plan = eval_plan(args)
    assert isinstance(plan, EvalPlan)
    assert plan.parts == PARTS
    assert plan.out_dir == Path("/tmp/x")
    assert plan.similar.with_use and plan.similar.past == 100
    assert (plan.masking.seed, plan.masking.cases, plan.merge.days) == (3, 50, 2)
    assert plan.report.reports == 10 and plan.report.end == date(2026, 1, 2)
    assert not plan.report.pdf
    assert plan.report.to_json()["end"] == "2026-01-02"


def test_out_dir_follows_the_dispatch_output_by_default() -> None:
    args = build_parser().parse_args(["eval", "--output", "somewhere/d.json", "--parts", "merge"])
    assert eval_plan(args).out_dir == Path("somewhere")


@pytest.mark.parametrize(
    "argv",
    [
        ["--parts", "nonsense"],
        ["--masking-cases", "0"],
        ["--report-reports", "-5"],
        ["--report-end", "2026-13-01"],
    ],
)
def test_bad_eval_arguments_are_usage_errors(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="bench-results/eval-dispatch.json")
    add_eval_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)


# --- envelope and files -----------------------------------------------------------------------
def test_envelope_and_write_result(tmp_path: Path) -> None:
    doc = envelope("masking", {"seed": 7}, {"cases": 3}, 1.26)
    assert doc["part"] == "masking" and doc["seconds"] == 1.3
    assert doc["parameters"] == {"seed": 7} and doc["results"] == {"cases": 3}
    path = write_result(tmp_path / "out", doc, "# md\n")
    assert path == tmp_path / "out" / "eval-masking.json"
    assert json.loads(path.read_text()) == doc
    assert path.with_suffix(".md").read_text() == "# md\n"


# --- decoys ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Span:
    start: int
    end: int


@dataclass(frozen=True)
class _Decoy:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class _Case:
    decoys: tuple[_Decoy, ...]


def test_decoys_masked_counts_overlaps_by_kind() -> None:
    cases = [
        _Case((_Decoy("date", 0, 5), _Decoy("amount", 10, 14))),
        _Case((_Decoy("date", 3, 8),)),
        _Case(()),
    ]
    predictions = [[_Span(4, 6)], [_Span(8, 12)], [_Span(0, 3)]]  # touching is no overlap
    assert decoys_masked(cases, predictions) == {
        "total": 3,
        "masked": 1,
        "by_kind": {"amount": [0, 1], "date": [1, 2]},
    }


# --- markdown ----------------------------------------------------------------------------------
def _rate(p: float) -> dict[str, Any]:
    return {"true": 10, "recall": p, "masked_recall": 1.0, "predicted": 9, "precision": 1.0}


def test_masking_markdown_rows_and_decoys() -> None:
    doc = envelope(
        "masking",
        {"seed": 7, "cases": 20},
        {
            "cases": 20,
            "per_type": {"phone": _rate(0.9), "name": _rate(1.0)},
            "overall": {"true": 20, "recall": 0.95, "predicted": 18, "precision": 1.0},
            "decoys_masked": {"total": 12, "masked": 1, "by_kind": {"date": [1, 4]}},
        },
        0.5,
    )
    md = masking_markdown(doc)
    assert "| phone | 10 | 0.900 | 1.000 | 9 | 1.000 |" in md
    assert "| **all** | 20 | 0.950 |  | 18 | 1.000 |" in md
    assert "Decoys masked by mistake: 1 of 12 (date 1/4)" in md
    assert "_parameters: seed=7, cases=20; 0.5 s_" in md


def _run(p: float, r: float) -> dict[str, Any]:
    return {
        "pairwise": {"precision": p, "recall": r, "f1": 0.0},
        "bcubed": {"precision": 0.98, "recall": 0.9, "f1": 0.0},
        "key_recall": 0.87,
        "whole_share": 0.5,
    }


def test_merge_markdown_lists_known_runs_in_order() -> None:
    command = {**_run(0.928, 0.62), "rejected": 0,
               "files": {"input": "d/merge.jsonl", "truth": "d/merge.truth.jsonl"}}
    del command["key_recall"]  # the command's run has no key readings to check
    runs = {"command": command, "truth": _run(0.967, 0.912),
            "analysis_citywide_key": _run(0.1, 0.1)}  # fmt: skip
    doc = envelope(
        "merge", {"seed": 1},
        {"stream": {"reports": 4474, "incidents": 200, "days": 14}, "runs": runs}, 16.0,
    )  # fmt: skip
    md = merge_markdown(doc)
    assert md.index("`truth`") < md.index("`command`")
    assert "| 0.967 | 0.912 | 0.980 / 0.900 | 0.870 | 0.500 |" in md
    assert "| 0.928 | 0.620 | 0.980 / 0.900 | – | 0.500 |" in md
    assert "citywide" not in md
    assert ("`citystream merge --input d/merge.jsonl --output OUT` then `citystream "
            "eval-check merge --truth d/merge.truth.jsonl --output OUT`") in md


def test_masking_files_round_trip_and_check(domain, tmp_path) -> None:
    from models.eval_suite import check_masking
    from processors.pii import find_pii
    from processors.pii_testset import pii_cases, read_masking_truth, write_masking_set

    cases = pii_cases(3, 30, domain)
    source, truth = write_masking_set(cases, tmp_path)
    assert [c for _, c in read_masking_truth(truth)] == cases
    inputs = [json.loads(x) for x in source.read_text().splitlines()]
    assert [set(x) for x in inputs] == [{"id", "text"}] * 30

    def output(spans_of) -> Path:
        out = tmp_path / "out.jsonl"
        out.write_text("".join(json.dumps({"id": x["id"], "spans": [
            {"type": s.type, "start": s.start, "end": s.end} for s in spans_of(x["text"])]},
            ensure_ascii=False) + "\n" for x in inputs[:-1]))  # the last one: rejected
        return out

    right = check_masking(truth, output(find_pii))
    assert right["rejected"] == 1
    nothing = check_masking(truth, output(lambda text: ()))
    assert nothing["overall"]["recall"] == 0.0  # type: ignore[index]
    assert right["overall"]["recall"] > 0.9  # type: ignore[index]


def test_similar_markdown_one_column_per_embedder() -> None:
    metrics = {"precision_at_5": 0.968, "recall_at_5": 0.9684}
    doc = envelope(
        "similar",
        {"past": 100},
        {
            "config": {"queries": 10, "past": 100, "k": 5},
            "options": {
                "case_embedder": {"filters": {"off": metrics, "decided": metrics}},
                "use": {"filters": {"off": {"precision_at_5": 0.127, "recall_at_5": 0.1}}},
            },
            "skipped": "nothing",
        },
        2.0,
    )
    md = similar_markdown(doc)
    assert "| filters | `case_embedder` P@5 / R@5 | `use` P@5 / R@5 |" in md
    assert "| no filters | 0.968 / 0.968 | 0.127 / 0.100 |" in md
    assert "| code and district as our dispatch decides them | 0.968 / 0.968 | – |" in md
    assert "district + time" not in md  # a mode no option ran is left out
    assert "Not run: nothing." in md


def test_report_markdown_and_timings() -> None:
    doc = envelope(
        "report",
        {"reports": 2000},
        {
            "day": "2026-11-20", "reports_in_day": 2000, "reports_in_previous_day": 2000,
            "stored": {"dispatch_decisions_log": 4000}, "prepare_s": 5.3, "store_s": 1.04,
            "generate_s": 3.261, "pdf": True, "files": ["a.html", "a.pdf"], "withheld": 0,
            "dead_letters": 0,
        },
        10.0,
    )  # fmt: skip
    md = report_markdown(doc)
    assert "Day report on 2000 reports of 2026-11-20" in md
    assert "| **generate the day report** (queries, charts, HTML, PDF) | **3.26 s** |" in md
    assert "Files: a.html, a.pdf; 0 item(s) withheld" in md
    table = timings_markdown([("masking", 0.8, "m.json"), ("report", 10.04, "r.json")])
    assert "| masking | 0.8 s | m.json |" in table
    assert "| **total** | **10.8 s** |  |" in table


def test_similar_files_and_their_check(tmp_path) -> None:
    from datetime import datetime

    from models.embedding.evaluate import Case, EvalConfig, check_similar, write_similar_sets

    t = datetime(2025, 6, 1)
    past = [Case("p1", "路灯不亮", "E02", "市南区", t), Case("p2", "路灯坏了", "E02", "市南区", t),
            Case("p3", "垃圾满了", "A01", "市南区", t), Case("p0", "老路灯", "E02", "市南区",
                                                              datetime(2020, 1, 1))]
    queries = [Case("q1", "路灯不亮了", "E02", "市南区", datetime(2026, 1, 5))]
    paths = write_similar_sets(past, queries, [("E02", None)], EvalConfig(), tmp_path)
    decided = [json.loads(x) for x in paths["decided"].read_text().splitlines()]
    assert decided == [{"id": "q1", "text": "路灯不亮了", "since": "2025-01-05T00:00:00+00:00",
                        "code": "E02"}]
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "q1", "similar": [{"id": "p1", "score": 0.9},
                                                       {"id": "p3", "score": 0.5}]}) + "\n")
    # In the year before the query: p1 and p2 are relevant (p0 is older); p1 is found.
    windowed = check_similar(paths["cases"], paths["truth"], out, 2, windowed=True)
    assert (windowed["precision_at_2"], windowed["recall_at_2"]) == (0.5, 0.5)
    everything = check_similar(paths["cases"], paths["truth"], out, 5, windowed=False)
    assert (everything["precision_at_5"], everything["precision_at_5_strict"],
            everything["recall_at_5"]) == (0.5, 0.2, round(1 / 3, 4))
