"""Merging on the stream: one decision in, its case link and the key's next state out."""

from datetime import UTC, datetime, timedelta

import pytest

from processors.cases import link_decision
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
