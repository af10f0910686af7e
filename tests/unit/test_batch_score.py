"""The batch scorer's line handling: one output per input line, in order, errors inline."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from models.batch_score import LineError, parse_line, score_lines
from processors.dispatch import Dispatcher, DispatchPolicy, ModelOutputs
from processors.dispatch_rule import all_routes

NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def test_parse_line_accepts_text_with_optional_fields():
    uid, req = parse_line(json.dumps({"id": "x/1", "text": "路灯不亮", "channel": "app",
                                      "reported_at": "2026-11-26T08:00:00+08:00"}), 3, NOW)
    assert uid == "x/1" and req.input_id == "line-3" and req.text == "路灯不亮"
    assert req.received_at == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    uid, req = parse_line('{"text": "井盖丢了"}', 7, NOW)
    assert (uid, req.received_at, req.input_kind) == ("line-7", NOW, "citizen_appeal")


def test_parse_line_errors_name_the_problem():
    cases = {
        "{oops": "not valid JSON",
        "[1, 2]": "expected a JSON object",
        '{"id": "a"}': "text: required",
        '{"text": "  "}': "text: required",
        '{"text": "x", "channel": "fax"}': "channel 'fax'",
        '{"text": "x", "reported_at": "yesterday"}': "not ISO 8601",
        '{"text": "x", "reported_at": "2026-11-26T08:00:00"}': "needs a UTC offset",
    }
    for raw, reason in cases.items():
        out = parse_line(raw, 1, NOW)
        assert isinstance(out, LineError) and reason in out.reason, (raw, out)


class _Scorer:
    def __init__(self, policy):
        self.policy = policy

    def score(self, inputs):
        n = len(inputs["token_ids"])
        code = np.full(len(self.policy.code_labels), 0.001)
        code[self.policy.code_labels.index("E07")] = 1.0
        route = np.full(len(self.policy.route_labels), 0.001)
        route[self.policy.route_labels.index("U:gas")] = 1.0
        return ModelOutputs(np.tile(code / code.sum(), (n, 1)),
                            np.tile(route / route.sum(), (n, 1)), "test")


class _Nowhere:
    def analyse(self, text, **hints):
        from processors.address import AddressAnalysis

        return AddressAnalysis(None, None, None, None, None, False, (), ())


def test_outputs_stay_aligned_with_inputs_across_batches(domain):
    policy = DispatchPolicy(tuple(sorted(domain.event_types)), all_routes(domain), 0.5,
                            (), (), 0.5, 0.98)
    dispatcher = Dispatcher(domain, policy, _Nowhere(), _Scorer(policy))
    lines = []
    for i in range(150):
        lines.append("{broken" if i % 37 == 5 else json.dumps({"id": f"r{i}", "text": "燃气味"}))
        if i == 80:
            lines.append("   ")  # blank lines are skipped, not answered
    out = list(score_lines(dispatcher, lines, now=NOW))
    assert len(out) == 150
    for i, item in enumerate(out):
        if i % 37 == 5:
            assert "error" in item
        else:
            assert item["id"] == f"r{i}" and item["unit"] == "青岛市燃气集团"
            assert set(item) >= {"code", "district", "street", "location_type", "confidence",
                                 "auto"}
