"""The decision logic with hand-set model probabilities: combining the two views,
resolving the unit from the place, review reasons, calibration and the policy file."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from processors.address import AddressAnalysis
from processors.dispatch import (
    Dispatcher,
    DispatchPolicy,
    DispatchRequest,
    ModelOutputs,
    ModelsUnavailable,
    PolicyError,
    PreparedRequest,
    RouteTable,
    decide,
    read_request,
    undecided,
)
from processors.dispatch_rule import all_routes

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy(domain):
    return DispatchPolicy(
        code_labels=tuple(sorted(domain.event_types)),
        route_labels=all_routes(domain),
        router_weight=0.5,
        calibration_x=(0.0, 1.0),
        calibration_y=(0.0, 1.0),
        auto_threshold=0.8,
        target_accuracy=0.97,
        model_versions={"event_classifier": "v1", "dispatch_router": "v1"},
    )


@pytest.fixture(scope="module")
def table(domain, policy):
    return RouteTable(domain, policy.code_labels, policy.route_labels)


def address(**kw):
    base = dict(district=None, street=None, road=None, place=None, location_type=None,
                outside_city=False, unresolved=(), evidence=())
    base.update(kw)
    return AddressAnalysis(**base)


def prepared(text="…", owner="unknown", code=None, **addr):
    request = DispatchRequest("a-1", "citizen_appeal", text, NOW, code=code)
    return PreparedRequest(request, address(**addr), owner)


def peaked(labels, label, p=0.96):
    probs = np.full(len(labels), (1 - p) / (len(labels) - 1))
    probs[labels.index(label)] = p
    return probs


def run(domain, policy, table, prep, code, route, **kw):
    return decide(prep, peaked(policy.code_labels, code, kw.pop("pc", 0.96)),
                  peaked(policy.route_labels, route, kw.pop("pr", 0.96)),
                  policy, table, domain, backend="onnxruntime", decided_at=NOW)


def test_agreeing_views_dispatch_automatically(domain, policy, table):
    place = prepared(district="市南区", street="八大关街道", location_type="residential")
    d = run(domain, policy, table, place, "A01", "S")
    assert (d.unit, d.code, d.route, d.auto) == ("八大关街道办事处", "A01", "S", True)
    assert d.confidence > 0.8 and d.review_reasons == ()
    assert len(d.alternatives) == 3 and all(a.confidence < d.confidence for a in d.alternatives)


def test_location_type_changes_the_unit(domain, policy, table):
    d = run(domain, policy, table, prepared(district="市南区", location_type="main_road"),
            "A01", "D:环境卫生服务中心")
    assert d.unit == "市南区环境卫生服务中心" and d.auto


def test_disagreeing_views_lower_confidence_to_review(domain, policy, table):
    # The classifier says noise (police); the router says the street office.
    d = run(domain, policy, table, prepared(district="市北区", street="台东街道",
                                            location_type="residential"), "G01", "S", pc=0.6,
            pr=0.6)
    assert not d.auto and "low_confidence" in d.review_reasons


def test_code_follows_the_chosen_route(domain, policy, table):
    # The classifier is torn between A01 (to the street office here) and A09 (城管);
    # the router settles on S, so the code reported is the one consistent with S.
    codes = policy.code_labels
    code_probs = np.full(len(codes), 0.001)
    code_probs[codes.index("A09")] = 0.5
    code_probs[codes.index("A01")] = 0.45
    d = decide(prepared(district="市南区", street="八大关街道", location_type="residential"),
               code_probs / code_probs.sum(), peaked(policy.route_labels, "S", 0.99),
               policy, table, domain, backend="x", decided_at=NOW)
    assert (d.route, d.code) == ("S", "A01")


def test_missing_street_goes_to_review_with_reason(domain, policy, table):
    d = run(domain, policy, table, prepared(district="市南区", location_type="residential"),
            "A01", "S")
    assert d.unit is None and not d.auto and d.review_reasons == ("street_unknown",)


def test_missing_district_goes_to_review(domain, policy, table):
    d = run(domain, policy, table, prepared(location_type="main_road"), "D01", "D:城市管理局")
    assert d.unit is None and "district_unknown" in d.review_reasons


def test_utility_needs_no_place(domain, policy, table):
    d = run(domain, policy, table, prepared(), "E07", "U:gas")
    assert d.unit == "青岛市燃气集团" and d.auto


def test_outside_city_and_conflicts_go_to_review(domain, policy, table):
    d = run(domain, policy, table, prepared(outside_city=True), "E07", "U:gas")
    assert not d.auto and "outside_city" in d.review_reasons
    conflict = ("district: conflict between 市南区 and 台东街道",)
    d = run(domain, policy, table, prepared(district="市南区", unresolved=conflict),
            "D01", "D:城市管理局")
    assert "place_conflict" in d.review_reasons


def test_manhole_owner_drives_the_rule_view(domain, policy, table):
    d = run(domain, policy, table, prepared(owner="power", district="李沧区"), "E01", "U:power")
    assert d.unit == "国网青岛供电公司" and d.auto
    d = run(domain, policy, table, prepared(owner="unknown", district="李沧区"), "E01", "U:power")
    assert not d.auto  # the cover's owner cannot be read: the rule disagrees with the router


def test_inspector_code_hint_counts(domain, policy, table):
    prep = prepared(district="市南区", location_type="main_road", code="D01")
    d = decide(prep, peaked(policy.code_labels, "A03", 0.5), peaked(policy.route_labels,
               "D:城市管理局", 0.7), policy, table, domain, backend="x", decided_at=NOW)
    assert d.code == "D01" and d.unit == "市南区城市管理局"


def test_undecided_is_a_review_item(domain):
    d = undecided(prepared(district="市南区"), backend="none: down", decided_at=NOW,
                  respond_minutes=30)
    assert (d.auto, d.review_reasons, d.unit, d.district) == (False, ("no_model",), None, "市南区")
    assert d.respond_by == NOW + timedelta(minutes=30)


def test_decision_is_due_by_its_urgency_and_carries_the_report(domain, policy, table):
    """respond_by = report time + the urgency level's response time from the domain file;
    the board shows the report's text, channel and place with it."""
    request = DispatchRequest("a-9", "citizen_appeal", "有燃气味，很危险", NOW, channel="hotline")
    prep = PreparedRequest(request, address(district="市南区", road="香港中路",
                                            place="万象城"), "unknown")
    gas = run(domain, policy, table, prep, "E07", "U:gas")
    minutes = domain.urgency_minutes[domain.event_types[gas.code].urgency]
    assert gas.respond_by == NOW + timedelta(minutes=minutes)
    assert (gas.channel, gas.text, gas.road, gas.place) == (
        "hotline", "有燃气味，很危险", "香港中路", "万象城")
    litter = run(domain, policy, table, prepared(district="市南区", street="八大关街道"),
                 "A01", "S")
    assert litter.respond_by - NOW == timedelta(minutes=domain.urgency_minutes["normal"])
    assert litter.respond_by > gas.respond_by


def test_policy_round_trip_and_checks(domain, policy, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy.to_json()))
    assert DispatchPolicy.load(path, domain) == policy
    broken = policy.to_json() | {"code_labels": ["Z99"]}
    path.write_text(json.dumps(broken))
    with pytest.raises(PolicyError, match="codes the domain does not"):
        DispatchPolicy.load(path, domain)
    with pytest.raises(PolicyError, match="run `make train`"):
        DispatchPolicy.load(tmp_path / "absent.json", domain)
    path.write_text("{")
    with pytest.raises(PolicyError, match="not valid JSON"):
        DispatchPolicy.load(path, domain)
    path.write_text("{}")
    with pytest.raises(PolicyError, match="expected shape"):
        DispatchPolicy.load(path, domain)


def test_calibration_map_is_applied(policy):
    squashed = replace(policy, calibration_x=(0.0, 0.5, 1.0), calibration_y=(0.0, 0.2, 0.9))
    assert squashed.calibrated(np.array([0.75, 2.0])) == pytest.approx([0.55, 0.9])


class _Scorer:
    """Answers from fixed probabilities, or fails like a dead backend."""

    def __init__(self, policy, fail=False):
        self.policy, self.fail = policy, fail

    def score(self, inputs):
        if self.fail:
            raise ModelsUnavailable("triton down and onnxruntime failed")
        n = len(inputs["token_ids"])
        return ModelOutputs(
            np.tile(peaked(self.policy.code_labels, "E07"), (n, 1)),
            np.tile(peaked(self.policy.route_labels, "U:gas"), (n, 1)),
            "test",
        )


class _NoAddress:
    def analyse(self, text, **hints):
        return address(district=hints.get("district"))


def test_dispatcher_batch_keeps_order_and_times_steps(domain, policy):
    dispatcher = Dispatcher(domain, policy, _NoAddress(), _Scorer(policy))
    requests = [DispatchRequest(f"r{i}", "citizen_appeal", "有燃气味", NOW) for i in range(5)]
    out = dispatcher.decide_batch(requests, queued_ms=[1, 2, 3, 4, 5])
    assert [d.input_id for d in out] == [f"r{i}" for i in range(5)]
    assert all(d.unit == "青岛市燃气集团" for d in out)
    for d, queued in zip(out, [1, 2, 3, 4, 5], strict=True):
        assert set(d.latency_ms) == {"queue", "address", "features", "inference", "decide", "total"}
        assert d.latency_ms["total"] >= queued
    assert dispatcher.decide_batch([]) == []


def test_dispatcher_sends_everything_to_review_when_no_model_answers(domain, policy):
    dispatcher = Dispatcher(domain, policy, _NoAddress(), _Scorer(policy, fail=True))
    out = dispatcher.decide_batch([DispatchRequest("r1", "citizen_appeal", "有燃气味", NOW)])
    assert out[0].review_reasons == ("no_model",) and out[0].backend.startswith("none")


def test_read_request_goes_through_ingest_validation(ctx):
    from tests.unit.factories import RECEIVED_AT, message

    appeal = {"kind": "citizen_appeal", "schema_version": 1, "appeal_id": "a1",
              "channel": "app", "received_at": "2026-11-26T08:00:00+08:00",
              "text": "暖气不热\u200b　", "district": "西海岸新区"}
    req = read_request(message(json.dumps(appeal).encode(), "citizen.appeals"), ctx, RECEIVED_AT)
    assert (req.input_id, req.text, req.district) == ("a1", "暖气不热", "黄岛区")
    assert req.received_at == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    event = {"kind": "city_event", "schema_version": 1, "event_id": "e1", "source":
             "grid_inspector", "reported_at": "2026-11-26T08:00:00+08:00",
             "description": "井盖缺失", "street": "八大关街道", "code": "E01"}
    req = read_request(message(json.dumps(event).encode(), "city.events"), ctx, RECEIVED_AT)
    assert (req.input_kind, req.street, req.district, req.code) == (
        "city_event", "八大关街道", "市南区", "E01")
    # What ingest refuses (and dead-letters) is not dispatched.
    bad_place = {**event, "district": "不存在区"}
    assert read_request(message(json.dumps(bad_place).encode(), "city.events"), ctx,
                        RECEIVED_AT) is None
    assert read_request(message(b"{not json", "city.events"), ctx, RECEIVED_AT) is None
    blank = {**appeal, "text": "   "}
    assert read_request(message(json.dumps(blank).encode(), "citizen.appeals"), ctx,
                        RECEIVED_AT) is None


def test_models_from_other_features_are_refused(policy, tmp_path):
    from models.scoring import expected_models

    stale = replace(policy, features_version="char1-3-crc32-b17-l1024-v1")
    with pytest.raises(PolicyError, match="run `make train`"):
        expected_models(tmp_path, stale)
