"""The batch scorer's line handling: the live ingest path per line, one output or reject
per line, in order."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from models.batch_score import batch_context, read_line, score_lines
from models.train import offline_context
from processors.dispatch import Dispatcher, DispatchPolicy, DispatchRequest, ModelOutputs
from processors.dispatch_rule import all_routes
from streams.batch import InputLine, Rejected

NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def _ctx(domain):
    return batch_context(offline_context(domain))


def _line(n: int, **record) -> InputLine:
    return InputLine(n, record)


def test_a_line_becomes_the_request_the_live_agent_builds(domain):
    req = read_line(_line(3, id="x/1", text="路灯不亮，我电话13912345678", channel="app",
                          reported_at="2026-11-26T08:00:00+08:00"), _ctx(domain), NOW)
    assert isinstance(req, DispatchRequest)
    assert req.input_id == "line-3" and req.input_kind == "citizen_appeal"
    assert "13912345678" not in req.text  # masked by ingest before any model sees it
    assert req.received_at == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    req = read_line(_line(7, id="y", text="井盖丢了", channel="grid_inspector"),
                    _ctx(domain), NOW)
    assert isinstance(req, DispatchRequest)
    assert (req.received_at, req.input_kind, req.channel) == (NOW, "city_event",
                                                              "grid_inspector")
    # An inspector's report carries the place the inspector established, as on the wire.
    req = read_line(_line(8, id="z", text="井盖丢了", channel="grid_inspector",
                          district="市南区", street="八大关街道", road="香港中路"),
                    _ctx(domain), NOW)
    assert isinstance(req, DispatchRequest)
    assert (req.district, req.street, req.road) == ("市南区", "八大关街道", "香港中路")


def test_lines_ingest_refuses_are_rejected_with_its_reason(domain):
    cases = {
        "": "empty",
        "  \u200b ": "empty",
        "燃" * 5000: "5000 characters, limit 4000",
        "燃" * 100_000: "the limit is",  # 300 kB on the wire: over the message limit
    }
    for text, reason in cases.items():
        out = read_line(_line(1, id="a", text=text), _ctx(domain), NOW)
        assert isinstance(out, Rejected) and reason in out.reason, (text[:20], out)
    for record, reason in (
        ({"channel": "fax"}, "channel 'fax'"),
        ({"reported_at": "yesterday"}, "reported_at:"),
        ({"reported_at": 5}, "reported_at: not a string"),
        ({"channel": "grid_inspector", "text": ""}, "text: empty"),
        ({"district": 7}, "district"),
    ):
        out = read_line(_line(1, **{"id": "a", "text": "x", **record}), _ctx(domain), NOW)
        assert isinstance(out, Rejected) and reason in out.reason, (record, out)


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
    lines = [_line(i + 1, id=f"r{i}", text="" if i % 37 == 5 else "燃气味 😀")
             for i in range(150)]
    out = score_lines(lines, dispatcher, _ctx(domain), now=NOW)
    assert len(out) == 150
    for i, item in enumerate(out):
        if i % 37 == 5:
            assert isinstance(item, Rejected) and "empty" in item.reason
        else:
            assert item["id"] == f"r{i}" and item["unit"] == "青岛市燃气集团"
            assert set(item) == {"id", "code", "district", "street", "location_type",
                                 "confidence", "auto", "unit", "review_reasons"}
    only_bad = [_line(1, id="x", text="")]
    assert [type(x) for x in score_lines(only_bad, dispatcher, _ctx(domain), NOW)] == [Rejected]


def test_the_dispatch_eval_files_and_their_check(tmp_path):
    from models.evaluate import Case, check, handwritten_lines, write_set

    pairs = list(handwritten_lines())[:6]
    source, truth = write_set(tmp_path, "hand", pairs)
    lines = [json.loads(x) for x in source.read_text().splitlines()]
    assert [x["id"] for x in lines] == [c.id for _, c in pairs]
    assert all({"id", "text", "channel", "reported_at"} <= set(x) for x in lines)
    labelled = [c for _, c in pairs if c.unit is not None]

    def scored(case: Case, unit: str | None, auto: bool) -> str:
        return json.dumps({"id": case.id, "code": case.code or "A01", "unit": unit,
                           "auto": auto, "confidence": 0.9, "review_reasons": []},
                          ensure_ascii=False) + "\n"

    out = tmp_path / "out.jsonl"
    out.write_text("".join(scored(c, c.unit, True) for _, c in pairs))
    perfect = check(truth, out)
    assert (perfect["unit_accuracy"], perfect["auto_rate"], perfect["rejected"]) == (1.0, 1.0, 0)
    out.write_text("".join(scored(c, "别的单位", True) for c in labelled[1:]))
    wrong = check(truth, out)
    assert wrong["unit_accuracy"] == 0.0 and wrong["rejected"] == len(pairs) - len(labelled) + 1
    assert len(wrong["misses"]) == len(labelled)


def test_only_emoji_is_decided_not_rejected(domain):
    # Ingest keeps it (it is text), so the live agent decides it; with the trained models
    # nothing in it settles a unit and it goes to a dispatcher (low_confidence).
    policy = DispatchPolicy(tuple(sorted(domain.event_types)), all_routes(domain), 0.5,
                            (), (), 0.5, 0.98)
    dispatcher = Dispatcher(domain, policy, _Nowhere(), _Scorer(policy))
    [out] = score_lines([_line(1, id="e", text="😡😡😡")], dispatcher, _ctx(domain), NOW)
    assert isinstance(out, dict) and out["id"] == "e" and out["district"] is None
