"""``citystream merge`` over files (streams.batch_merge): the live decision and case logic,
any input order, rejects with reasons, a spill file that goes away."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from models.batch_score import batch_context, decide_lines
from models.train import offline_context
from processors.dispatch import Dispatcher, DispatchPolicy, ModelOutputs
from processors.dispatch_rule import all_routes
from processors.merge import MergePolicy
from processors.merge_batch import batch_policy
from schemas.domain import Domain
from schemas.records import DispatchDecision
from streams.batch import InputLine, Rejected
from streams.batch_merge import run_merge

NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
PIPE_A = "香港中路18号门前人行道上自来水管爆了，水哗哗往外冒"
PIPE_B = "香港中路上水管破了，水一直往外喷，路面都是水"
PIPE_OTHER_ROAD = "延安三路上水管破了，水一直往外喷"


class _Scorer:
    """Every report is a burst water main (E06): which reports merge is then a question of
    place and time only, which is what these tests are about."""

    def __init__(self, policy: DispatchPolicy) -> None:
        self.policy = policy

    def score(self, inputs: dict[str, np.ndarray]) -> ModelOutputs:
        n = len(inputs["token_ids"])
        code = np.full(len(self.policy.code_labels), 0.001)
        code[self.policy.code_labels.index("E06")] = 1.0
        route = np.full(len(self.policy.route_labels), 0.001)
        return ModelOutputs(np.tile(code / code.sum(), (n, 1)),
                            np.tile(route / route.sum(), (n, 1)), "test")


@pytest.fixture(scope="module")
def decide(domain: Domain):
    from processors.address import live_analyser

    policy = DispatchPolicy(tuple(sorted(domain.event_types)), all_routes(domain), 0.5,
                            (), (), 0.5, 0.98)
    dispatcher = Dispatcher(domain, policy, live_analyser(domain), _Scorer(policy))
    ctx = batch_context(offline_context(domain))

    def run(lines: Sequence[InputLine]) -> list[DispatchDecision | Rejected]:
        return decide_lines(lines, dispatcher, ctx, NOW, time_field="time")

    return run


def _lines() -> list[str]:
    items: list[object] = [
        {"id": "p1", "text": PIPE_A, "time": "2025-11-05T08:00:00+08:00", "channel": "app"},
        {"id": "p2", "text": PIPE_B, "time": "2025-11-05T08:08:00+08:00"},
        {"id": "p3", "text": "市南区香港中路20号水管爆裂", "time": "2025-11-05T00:20:00Z"},
        {"id": "q1", "text": PIPE_OTHER_ROAD, "time": "2025-11-05T08:09:00+08:00"},
        {"id": "late", "text": PIPE_A, "time": "2025-11-09T08:00:00+08:00"},
        {"id": "e1", "text": "😡😡😡", "time": "2025-11-05T08:01:00+08:00"},
    ]
    return [json.dumps(i, ensure_ascii=False) for i in items]


HOSTILE = [
    "{not json",
    json.dumps({"id": "x1", "text": "", "time": "2025-11-05T08:00:00+08:00"}),
    json.dumps({"id": "x2", "text": PIPE_A, "time": "2025-11-05T08:00:00"}),  # no offset
    json.dumps({"id": "x3", "text": PIPE_A, "time": "yesterday"}),
    json.dumps({"id": "x4", "text": PIPE_A * 3000, "time": "2025-11-05T08:00:00+08:00"}),
    json.dumps({"id": "x5", "text": PIPE_A}),
    json.dumps({"id": "p1", "text": PIPE_B, "time": "2025-11-05T08:00:00+08:00"}),  # dup id
    '"just a string"',
]


@pytest.fixture(scope="module")
def policy(domain: Domain) -> MergePolicy:
    return batch_policy(domain)


def _merge(decide, policy: MergePolicy, lines: list[str], tmp_path,
           chunk: int = 2) -> tuple[list[dict], list[dict]]:
    source = io.BytesIO(("\n".join(lines) + "\n").encode())
    sink, rejects = io.StringIO(), io.StringIO()
    run_merge(source, sink, rejects, decide, policy, progress=io.StringIO(), chunk=chunk,
              workdir=tmp_path)
    return ([json.loads(x) for x in sink.getvalue().splitlines()],
            [json.loads(x) for x in rejects.getvalue().splitlines()])


def test_one_incident_is_one_case_named_after_its_first_report(decide, policy, tmp_path) -> None:
    out, rejects = _merge(decide, policy, _lines(), tmp_path)
    assert rejects == []
    assert [o["id"] for o in out] == ["p1", "p2", "p3", "q1", "late", "e1"]  # input order
    cases = {o["id"]: o["case_id"] for o in out}
    assert cases["p1"] == cases["p2"] == cases["p3"] == "p1"
    assert cases["q1"] == "q1"  # another road
    assert cases["late"] == "late"  # four days on: past the window
    assert cases["e1"] == "e1"  # no place in it
    assert list(tmp_path.iterdir()) == []  # the spill file is gone


def test_any_input_order_gives_the_same_cases(decide, policy, tmp_path) -> None:
    lines = _lines()
    first = {o["id"]: o["case_id"] for o in _merge(decide, policy, lines, tmp_path)[0]}
    for seed in range(3):
        shuffled = lines[:]
        random.Random(seed).shuffle(shuffled)
        out, _ = _merge(decide, policy, shuffled, tmp_path, chunk=3)
        assert [o["id"] for o in out] == [json.loads(x)["id"] for x in shuffled]
        assert {o["id"]: o["case_id"] for o in out} == first


def test_hostile_lines_are_rejected_with_line_and_reason(decide, policy, tmp_path) -> None:
    lines = _lines()[:2] + HOSTILE
    out, rejects = _merge(decide, policy, lines, tmp_path)
    assert [o["id"] for o in out] == ["p1", "p2"]
    assert {o["case_id"] for o in out} == {"p1"}
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert sorted(reasons) == list(range(3, 11))
    assert reasons[3].startswith("not a JSON line")
    assert "empty" in reasons[4]
    assert reasons[5].startswith("time:") and "timezone" in reasons[5]
    assert reasons[6].startswith("time:")
    assert "limit 4000" in reasons[7]
    assert reasons[8] == "missing or not a string: time"
    assert reasons[9] == "duplicate id 'p1' (first on line 1)"
    assert "not an object" in reasons[10]
    assert all(len(r["input"]) <= 500 for r in rejects)


def test_a_file_of_only_rejects_gives_no_output(decide, policy, tmp_path) -> None:
    out, rejects = _merge(decide, policy, HOSTILE[:4], tmp_path)
    assert out == [] and len(rejects) == 4
