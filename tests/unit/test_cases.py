"""Merging on the stream: one decision in, its case link and the key's next state out."""

from datetime import UTC, datetime, timedelta

import pytest

from processors.cases import CaseLinker, link_decision
from processors.merge import CaseIndex
from processors.merge_batch import batch_policy
from schemas.records import DispatchDecision

T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def index(domain) -> CaseIndex:
    return CaseIndex(batch_policy(domain))


def decision(input_id: str, minutes: int, district: str | None = "市南区",
             road: str | None = "香港中路", text: str = "香港中路18号自来水管爆了，水流满地",
             code: str = "E06") -> DispatchDecision:
    at = (T0 + timedelta(minutes=minutes)).isoformat()
    return DispatchDecision(
        kind="dispatch_decision", schema_version=1, input_id=input_id,
        input_kind="citizen_appeal", channel="hotline_12345", text=text, code=code,
        event_name="供水问题", urgency="urgent", route="U:water", unit="青岛市供水集团",
        district=district, street=None, road=road, confidence=0.97, auto=True,
        backend="onnxruntime", received_at=at, decided_at=at,
    )


def test_reports_of_one_burst_share_a_case_and_count_reporters(index):
    first = link_decision(decision("a1", 0), None, index, T0)
    assert (first.link.case_id, first.link.merged, first.link.reporters) == ("a1", False, 1)
    second = link_decision(decision("a2", 10), first.value, index, T0)
    assert (second.link.case_id, second.link.merged, second.link.reporters) == ("a1", True, 2)
    assert second.key == first.key and second.key.startswith("市南区|")


def test_a_repeated_delivery_gets_the_same_link_and_is_not_counted_twice(index):
    first = link_decision(decision("b1", 0), None, index, T0)
    second = link_decision(decision("b2", 5), first.value, index, T0)
    again = link_decision(decision("b2", 5), second.value, index, T0)
    assert again.link.case_id == "b1" and again.link.reporters == 2
    assert again.value is second.value  # state untouched
    third = link_decision(decision("b3", 9), again.value, index, T0)
    assert third.link.reporters == 3


def test_reports_that_cannot_meet_others_are_their_own_case(index):
    lone = link_decision(decision("c1", 0, district=None), None, index, T0)
    assert (lone.link.case_id, lone.key, lone.value, lone.link.merge_key) == ("c1", None, None, "")


def test_the_same_problem_days_later_is_a_new_case(index):
    first = link_decision(decision("d1", 0), None, index, T0)
    later = link_decision(decision("d2", 3 * 24 * 60), first.value, index, T0)
    assert later.link.case_id == "d2" and not later.link.merged


def test_a_state_this_version_cannot_read_starts_the_key_afresh(index):
    step = link_decision(decision("e1", 0), {"state": {"v": -1}, "recent": {}}, index, T0)
    assert step.link.case_id == "e1" and step.value is not None


def test_a_report_that_folds_two_cases_relinks_the_reports_of_the_absorbed_one(index):
    linker = CaseLinker(index)
    by_name = decision("f1", 0, road=None, text="海韵花园小区停水了", code="E06")
    by_name = by_name.model_copy(update={"place": "海韵花园", "street": "八大关街道"})
    by_road = decision("f2", 5, text="香港中路18号小区停水")
    bridge = decision("f3", 10, text="香港中路18号海韵花园3号楼停水").model_copy(
        update={"place": "海韵花园", "street": "八大关街道"}
    )
    first = linker.link(by_name, T0)
    second = linker.link(by_road, T0)
    assert [first[0].case_id, second[0].case_id] == ["f1", "f2"]
    links = linker.link(bridge, T0)
    assert links[0].merged and links[0].reporters == 3
    survivor = links[0].case_id
    (relink,) = links[1:]
    absorbed = ({"f1", "f2"} - {survivor}).pop()
    assert relink.input_id == absorbed and relink.case_id == survivor and relink.relinked
    # The relinked report keeps its own facts: the case view adds up without it.
    assert relink.code == "E06" and relink.reported_at is not None
    assert relink.district == "市南区" and relink.reporters == 3
    # A repeat of the absorbed report now gets its new case.
    again = linker.link(by_name if absorbed == "f1" else by_road, T0)
    assert again[0].case_id == survivor


def test_links_carry_the_report_facts_and_the_case_place(index):
    (link,) = CaseLinker(index).link(decision("g1", 0), T0)
    assert (link.district, link.code, link.event_name) == ("市南区", "E06", "供水问题")
    assert (link.place_level, link.place) == ("number", "香港中路18号")
    assert link.reported_at == T0


def test_forget_drops_every_key(index):
    linker = CaseLinker(index)
    linker.link(decision("h1", 0), T0)
    assert linker.values
    linker.forget()
    assert not linker.values
    (again,) = linker.link(decision("h2", 5), T0)
    assert again.case_id == "h2"  # no memory of h1: a rebuild must replay it first


def test_a_decision_the_merge_logic_fails_on_stays_its_own_case(index, monkeypatch):
    linker = CaseLinker(index)
    errors = []

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(index.__class__, "step", broken)
    links = linker.link_all([decision("k1", 0)], T0, on_error=lambda d, e: errors.append(d))
    assert [(k.case_id, k.merged, k.merge_key) for k in links] == [("k1", False, "")]
    assert [d.input_id for d in errors] == ["k1"]


def test_a_case_without_a_usable_place_gets_an_empty_place(index):
    vague = decision("m1", 0, road=None, text="停水了")
    (link,) = CaseLinker(index).link(vague, T0)
    assert (link.place_level, link.place) == ("", "")
