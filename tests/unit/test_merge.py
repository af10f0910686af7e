"""Duplicate merging (processors.merge, processors.merge_batch): known answers, state,
hostile input, determinism, hotspots."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from processors.merge import (
    CITY_TZ,
    CaseIndex,
    CaseState,
    HotspotRule,
    MergePolicy,
    MergeReport,
    MergeStateError,
    case_key,
    count_case,
    follow,
    hotspot_key,
    hotspots,
    is_generic_name,
    names_match,
    normalise_name,
    place_signature,
    place_words,
    report_from_decision,
    similarity,
)
from processors.merge_batch import assign_cases
from schemas.domain import Domain
from schemas.records import DispatchDecision

T0 = datetime(2025, 11, 5, 8, 0, tzinfo=CITY_TZ)


@pytest.fixture(scope="module")
def policy(domain: Domain) -> MergePolicy:
    return MergePolicy.default(domain)


@pytest.fixture(scope="module")
def index(policy: MergePolicy) -> CaseIndex:
    return CaseIndex(policy)


def rep(
    report_id: str,
    text: str,
    at: datetime | None = T0,
    *,
    code: str = "E06",
    district: str | None = "市南区",
    street: str | None = None,
    road: str | None = None,
    place: str | None = None,
) -> MergeReport:
    return MergeReport(report_id, at, code, district, street, road, place, text, "hotline_12345")


def run(index: CaseIndex, reports: list[MergeReport]) -> dict[str, str]:
    """Stream reports through per-key states, as the agent does (JSON between steps)."""
    table: dict[str, str] = {}
    merged_into: dict[str, str] = {}
    out: dict[str, str] = {}
    for report in reports:
        key = index.key(report)
        if key is None:
            out[report.report_id] = report.report_id
            continue
        stored = table.get(key)
        step = index.step(report, CaseState.from_json(json.loads(stored) if stored else None))
        table[key] = json.dumps(step.state.to_json())
        out[report.report_id] = step.case_id
        for absorbed in step.absorbed:
            merged_into[absorbed] = step.case_id
    return {r: follow(merged_into, c) for r, c in out.items()}


PIPE_A = "香港中路18号门前人行道上自来水管爆了，水哗哗往外冒"
PIPE_B = "香港中路上水管破了，水一直往外喷，路面都是水"
PIPE_OTHER_ROAD = "延安三路上水管破了，水一直往外喷"


# ---- known answers ---------------------------------------------------------------------------
def test_two_burst_pipe_reports_ten_minutes_apart_on_one_road_merge(index: CaseIndex) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    b = rep("b", PIPE_B, T0 + timedelta(minutes=10), road="香港中路")
    assert run(index, [a, b]) == {"a": "a", "b": "a"}


def test_the_same_on_another_road_does_not_merge(index: CaseIndex) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    b = rep("b", PIPE_OTHER_ROAD, T0 + timedelta(minutes=10), road="延安三路")
    assert run(index, [a, b]) == {"a": "a", "b": "b"}


def test_the_same_place_three_days_later_is_a_new_case(index: CaseIndex) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    b = rep("b", PIPE_A, T0 + timedelta(days=3), road="香港中路")
    assert run(index, [a, b]) == {"a": "a", "b": "b"}


def test_out_of_order_arrival_merges_and_keeps_the_first_arrival_as_id(
    index: CaseIndex,
) -> None:
    late = rep("late", PIPE_B, T0 - timedelta(minutes=40), road="香港中路")
    first = rep("first", PIPE_A, road="香港中路")
    assert run(index, [first, late]) == {"first": "first", "late": "first"}


def test_a_report_later_than_the_grace_period_finds_its_case_closed(
    index: CaseIndex, policy: MergePolicy
) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    # Other reports of the key move its clock far ahead; the old case is expired.
    moves = rep("x", "香港西路88号水管爆了", T0 + timedelta(hours=20), road="香港西路")
    late = rep("late", PIPE_B, T0 + timedelta(minutes=5), road="香港中路")
    assert run(index, [a, moves, late])["late"] == "late"


def test_a_different_problem_at_the_same_place_never_meets_it(
    index: CaseIndex, policy: MergePolicy
) -> None:
    pipe = rep("a", PIPE_A, road="香港中路")
    light = rep("b", "香港中路18号门前路灯不亮", T0 + timedelta(minutes=5), code="E02",
                road="香港中路")  # fmt: skip
    assert case_key(pipe, policy) != case_key(light, policy)
    assert run(index, [pipe, light]) == {"a": "a", "b": "b"}


def test_lookalike_codes_share_a_key_but_need_strong_evidence(
    index: CaseIndex, policy: MergePolicy
) -> None:
    site = "瑞泉项目工地夜间施工，吵得睡不着"
    c01 = rep("a", site, code="C01", place="瑞泉项目工地")
    g01_same_site = rep("b", "瑞泉项目工地半夜噪音扰民", T0 + timedelta(hours=1), code="G01",
                        place="瑞泉项目工地")  # fmt: skip
    g01_same_street = rep("c", "楼下广场舞太吵", T0 + timedelta(minutes=30), code="G01",
                          street="八大关街道")  # fmt: skip
    assert case_key(c01, policy) == case_key(g01_same_site, policy) == "市南区|noise"
    assert run(index, [c01, g01_same_site, g01_same_street]) == {"a": "a", "b": "a", "c": "c"}


def test_a_landmark_named_differently_merges(index: CaseIndex) -> None:
    a = rep("a", "瑞泉农贸市场门口摆摊占道", code="D01", place="瑞泉农贸市场")
    b = rep("b", "瑞泉市场门口小商贩占道", T0 + timedelta(hours=3), code="D01",
            place="瑞泉市场")  # fmt: skip
    assert run(index, [a, b])["b"] == "a"


def test_a_typo_in_the_road_still_finds_the_case(index: CaseIndex) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    b = rep("b", "香岗中路18号水管爆了", T0 + timedelta(minutes=15))  # analysis found no road
    assert run(index, [a, b])["b"] == "a"


def test_far_apart_numbers_on_one_road_are_two_places(index: CaseIndex) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    b = rep("b", "香港中路260号门前水管爆了", T0 + timedelta(minutes=15), road="香港中路")
    assert run(index, [a, b]) == {"a": "a", "b": "b"}


def test_a_report_naming_both_places_folds_their_cases(index: CaseIndex) -> None:
    by_name = rep("a", "海韵花园小区停水了", place="海韵花园", street="八大关街道")
    by_road = rep("b", "香港中路18号小区停水", T0 + timedelta(minutes=5), road="香港中路",
                  district="市南区")  # fmt: skip
    bridge = rep("c", "香港中路18号海韵花园3号楼停水", T0 + timedelta(minutes=10),
                 road="香港中路", place="海韵花园", street="八大关街道")  # fmt: skip
    state = CaseState()
    state = index.step(by_name, state).state
    state = index.step(by_road, state).state
    assert len(state.cases) == 2
    step = index.step(bridge, state)
    assert step.merged and len(step.state.cases) == 1
    assert {step.case_id, *step.absorbed} == {"a", "b"}
    assert step.state.cases[0].reports == 3


def test_vague_reports_join_only_a_single_fitting_case(index: CaseIndex) -> None:
    a = rep("a", PIPE_A, road="香港中路", street="八大关街道")
    vague = rep("v", "八大关街道路边水管爆了", T0 + timedelta(minutes=20), street="八大关街道")
    assert run(index, [a, vague])["v"] == "a"
    b = rep("b", "延安三路上水管爆了", T0 + timedelta(minutes=5), road="延安三路",
            street="八大关街道")  # fmt: skip
    assert run(index, [a, b, vague])["v"] == "v"


# ---- similarity and place signatures ----------------------------------------------------------
def test_similarity_explains_pairs(policy: MergePolicy) -> None:
    a = rep("a", PIPE_A, road="香港中路")
    same = similarity(a, rep("b", PIPE_B, T0 + timedelta(minutes=10), road="香港中路"), policy)
    assert same.mergeable and same.place == "road" and same.gap == timedelta(minutes=10)
    other = similarity(a, rep("c", PIPE_OTHER_ROAD, road="延安三路"), policy)
    assert not other.mergeable and other.place == "conflict"
    later = similarity(a, rep("d", PIPE_A, T0 + timedelta(days=3), road="香港中路"), policy)
    assert later.place == "strong" and not later.within_window and not later.mergeable
    untimed = similarity(a, rep("e", PIPE_A, None, road="香港中路"), policy)
    assert untimed.gap is None and not untimed.mergeable


def test_place_signature_reads_crossings_numbers_and_names(policy: MergePolicy) -> None:
    sig = place_signature(
        rep(
            "a",
            "来电人反映香港中路与延安三路交叉口往西，香港中路18号海韵花园小区门口",
            place="海韵花园小区",
        ),  # fmt: skip
        policy,
    )
    assert set(sig.roads) == {"香港中路", "延安三路"}
    assert sig.crossings == ("延安三路|香港中路",)
    assert sig.numbers == (18,) and sig.names == ("海韵花园",)
    # 3号楼 is a building, not a house number; a phone number is not one either.
    assert place_signature(rep("b", "5号楼3单元，电话13800001234"), policy).numbers == ()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("瑞泉市场", "瑞泉农贸市场", True),
        ("海韵花园", "海韵花园", True),
        ("锦绣公寓", "锦公绣寓", True),  # two characters swapped
        ("德韵", "德韵地块项目工地", True),
        ("瑞泉中学", "瑞泉小学", False),
        ("曹戈庄村", "袁戈庄村", False),
        ("瑞泉机械厂", "瑞泉食品厂", False),
    ],
)
def test_names_match(a: str, b: str, same: bool) -> None:
    assert names_match(a, b) is same


def test_generic_names_and_aliases(policy: MergePolicy) -> None:
    for generic in (
        "集贸市场",
        "一居民小区",
        "楼前小区",
        "辖区某商场",
        "书院路农贸市场",
        "十字路口",
    ):
        assert is_generic_name(generic), generic
        assert normalise_name(generic, policy) == ""
    assert normalise_name("海韵花园小区", policy) == "海韵花园"
    assert normalise_name("天泰水岸南门", policy) == "天泰水岸"
    assert normalise_name("一浴", policy) == "第一海水浴场"
    assert normalise_name("和平小区中心广场", policy) == "和平"


def test_place_words_read_names_not_phrases(policy: MergePolicy) -> None:
    assert place_words("地点：天山三路上的万旺超市旁边的小胡同", policy) == ("万旺超市",)
    assert place_words("莱西市德韵地块项目工地夜间施工", policy) == ("德韵地块项目工地",)
    assert place_words("存在施工问题，对面工地夜里还在打桩", policy) == ()
    assert place_words("来电人所在小区楼下", policy) == ()


def test_traditional_characters_with_a_character_table(domain: Domain) -> None:
    table = {ord("莊"): "庄", ord("區"): "区"}
    traditional = MergePolicy.default(domain, char_map=table)
    assert normalise_name("枫林山莊小區", traditional) == "枫林山庄"


# ---- state ---------------------------------------------------------------------------------------
def test_state_round_trips_through_json(index: CaseIndex) -> None:
    state = CaseState()
    for i, report in enumerate(
        [
            rep("a", PIPE_A, road="香港中路", street="八大关街道"),
            rep("b", "香港中路与延安三路交叉口水管爆了", T0 + timedelta(minutes=3)),
            rep("c", "海韵花园小区停水", T0 + timedelta(minutes=4), place="海韵花园"),
        ]
    ):
        state = index.step(report, state).state
        assert len(state.cases) >= 1, i
    back = CaseState.from_json(json.loads(json.dumps(state.to_json())))
    assert back == state
    assert CaseState.from_json(None) == CaseState()


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"v": 99, "cases": []},
        {"v": 1, "cases": "x"},
        {"v": 1, "cases": [{"id": "a"}]},
        {"v": 1, "watermark": "soon", "cases": []},
        {"v": 1, "cases": [{"id": "a", "first": 10, "last": 5, "n": 1, "codes": [],
                            "district": None, "streets": [], "roads": [], "names": [],
                            "numbers": []}]},
    ],
)  # fmt: skip
def test_malformed_state_is_refused(bad: object) -> None:
    with pytest.raises(MergeStateError):
        CaseState.from_json(bad)


def test_expiry_frees_memory(index: CaseIndex) -> None:
    state = CaseState()
    for i in range(50):
        report = rep(f"r{i}", f"香港中路{i * 40 + 1}号水管爆了", T0 + timedelta(minutes=i),
                     road="香港中路")  # fmt: skip
        state = index.step(report, state).state
    assert len(state.cases) == 50
    # Within window + grace nothing goes; past it (urgent: 2 h window, 2 h grace) all do.
    assert index.expire(state, T0 + timedelta(hours=3)) == state
    later = T0 + timedelta(hours=6)
    assert len(index.closing(state, later)) == 50
    assert index.expire(state, later).cases == ()
    # The next report's own clock does the same in step().
    step = index.step(rep("n", PIPE_A, later, road="香港中路"), state)
    assert len(step.closed) == 50 and len(step.state.cases) == 1


def test_state_size_is_bounded(domain: Domain) -> None:
    small = CaseIndex(MergePolicy.default(domain, max_cases=10))
    state = CaseState()
    for i in range(30):
        state = small.step(rep(f"r{i}", f"第{i}处", T0 + timedelta(seconds=i)), state).state
    assert len(state.cases) == 10
    huge = rep("h", "香港中路" * 30_000, T0, road="香港中路")
    case = CaseIndex(MergePolicy.default(domain)).step(huge, CaseState()).state.cases[0]
    assert len(json.dumps(case.to_json(), ensure_ascii=False)) < 400


# ---- hostile input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["", " ", "😡😡😡🆘", "香港中路" * 25_000, "\x00\u200b\ufeff", "号" * 5000]
)
def test_hostile_texts_are_cases(index: CaseIndex, text: str) -> None:
    a = rep("a", text)
    b = rep("b", text, T0 + timedelta(minutes=1))
    got = run(index, [a, b])
    assert set(got) == {"a", "b"} and got["a"] == "a"


def test_missing_time_or_unknown_code_is_its_own_case(
    index: CaseIndex, policy: MergePolicy
) -> None:
    untimed = rep("u", PIPE_A, None, road="香港中路")
    unknown = rep("z", PIPE_A, code="Z99", road="香港中路")
    assert case_key(untimed, policy) is None and case_key(unknown, policy) is None
    assert index.assign(untimed, CaseState()) == ("u", CaseState(), False)
    assert run(index, [rep("a", PIPE_A, road="香港中路"), untimed, unknown]) == {
        "a": "a", "u": "u", "z": "z",
    }  # fmt: skip


def test_times_with_odd_offsets_are_instants(index: CaseIndex) -> None:
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    a = rep("a", PIPE_A, datetime(2025, 11, 5, 0, 0, tzinfo=UTC), road="香港中路")
    b = rep("b", PIPE_B, datetime(2025, 11, 5, 5, 55, tzinfo=kathmandu), road="香港中路")
    c = rep("c", PIPE_B, datetime(2025, 11, 4, 20, 20, tzinfo=timezone(timedelta(hours=-4))),
            road="香港中路")  # fmt: skip
    naive = rep("d", PIPE_B, datetime(2025, 11, 5, 8, 25), road="香港中路")  # read as +08:00
    assert run(index, [a, b, c, naive]) == {"a": "a", "b": "a", "c": "a", "d": "a"}


def test_extreme_years_survive_the_round_trip(index: CaseIndex) -> None:
    for year in (1, 1970, 9999):
        at = datetime(year, 6, 1, tzinfo=UTC)
        state = index.step(rep("a", PIPE_A, at, road="香港中路"), CaseState()).state
        assert CaseState.from_json(json.loads(json.dumps(state.to_json()))) == state


# ---- determinism ----------------------------------------------------------------------------
def test_assignment_is_deterministic(domain: Domain, policy: MergePolicy) -> None:
    from models.simulator.bursts import burst_stream
    from processors.merge_eval import truth_reports

    stream = burst_stream(domain, 3, 20, 200, days=3)
    reports = truth_reports(stream, stated=False)
    first = assign_cases(reports, policy)
    assert assign_cases(reports, policy) == first
    assert run(CaseIndex(policy), reports) == run(CaseIndex(policy), reports)


def test_report_from_a_dispatch_decision() -> None:
    decision = DispatchDecision(
        kind="dispatch_decision", schema_version=1, input_id="a-1", input_kind="citizen_appeal",
        channel="app", text=PIPE_A, code="E06", event_name="供水问题", urgency="urgent",
        route="U:water", district="市南区", street=None, road="香港中路", place=None,
        confidence=0.9, auto=True, backend="test",
        received_at="2025-11-05T08:00:00+08:00",  # type: ignore[arg-type]
        decided_at="2025-11-05T08:00:01+08:00",  # type: ignore[arg-type]
    )  # fmt: skip
    report = report_from_decision(decision)
    assert report.report_id == "a-1" and report.road == "香港中路" and report.at == T0
    assert report.channel == "app"


# ---- hotspots ------------------------------------------------------------------------------
def test_a_place_producing_cases_is_a_hotspot(index: CaseIndex) -> None:
    rule = HotspotRule(min_cases=3, days=7)
    counts: dict[str, dict[str, int]] = {}
    for day in (0, 2, 5):
        at = T0 + timedelta(days=day)
        case = index.step(rep(f"c{day}", "瑞泉农贸市场门口摆摊", at, code="D01",
                              place="瑞泉农贸市场"), CaseState()).state.cases[0]  # fmt: skip
        key = hotspot_key(case, rule)
        assert key == "市南区|瑞泉农贸市场"
        counts[key] = count_case(counts.get(key, {}), at, rule)
    found = hotspots(counts, T0 + timedelta(days=5), rule)
    assert len(found) == 1
    spot = found[0]
    assert (spot.place, spot.district, spot.cases) == ("瑞泉农贸市场", "市南区", 3)
    assert spot.window == (date(2025, 11, 4), date(2025, 11, 10))
    # Ten days on, the first cases are out of the window.
    assert hotspots(counts, T0 + timedelta(days=10), rule) == []
    # Counting keeps at most the rule's days.
    pruned = count_case(counts["市南区|瑞泉农贸市场"], T0 + timedelta(days=11), rule)
    assert pruned == {"2025-11-10": 1, "2025-11-16": 1}


def test_hotspot_counts_ignore_junk_and_vague_places(index: CaseIndex) -> None:
    rule = HotspotRule(min_cases=2, days=3)
    junk = {"市南区|x": {"not a day": 5, "2025-11-05": "many", "2025-11-04": -3}}
    assert hotspots(junk, T0, rule) == []  # type: ignore[arg-type]
    road_only = index.step(rep("r", PIPE_B, road="香港中路"), CaseState()).state.cases[0]
    assert hotspot_key(road_only, rule) is None
    assert hotspot_key(road_only, replace(rule, levels=frozenset({"road"}))) == "市南区|香港中路"
    with pytest.raises(ValueError):
        HotspotRule(min_cases=0)


# ---- evaluation ----------------------------------------------------------------------------
def test_clustering_scores_known_answer() -> None:
    from processors.merge_eval import clustering_scores

    gold = {"a": "x", "b": "x", "c": "x", "d": "y", "e": "e"}
    predicted = {"a": "1", "b": "1", "c": "2", "d": "2", "e": "3"}
    scores = clustering_scores(gold, predicted)
    # Predicted pairs: ab (right), cd (wrong); gold pairs: ab, ac, bc.
    assert (scores.pairwise_precision, scores.pairwise_recall) == (0.5, 0.3333)
    assert clustering_scores(gold, gold).pairwise_f1 == 1.0


def test_evaluation_on_a_small_stream(domain: Domain) -> None:
    from processors.merge_eval import run as evaluate

    report = evaluate(domain, 2, 40, 400, 4)
    truth = report["runs"]["truth"]  # type: ignore[index]
    assert truth["pairwise"]["precision"] >= 0.93 and truth["pairwise"]["recall"] >= 0.85
    assert truth["key_recall"] == 1.0
    assert truth["hard_negatives_merged"]["recurrence"]["merged"] == 0
    assert truth["hard_negatives_merged"]["other_problem"]["merged"] == 0
    assert json.loads(json.dumps(report, ensure_ascii=False)) == report


def test_the_merge_files_and_their_check(domain: Domain, tmp_path) -> None:
    from models.simulator.bursts import burst_stream
    from processors.merge_eval import check_merge, write_merge_set

    stream = burst_stream(domain, 5, 10, 100, days=2)
    source, truth = write_merge_set(stream, 5, tmp_path)
    lines = [json.loads(x) for x in source.read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(b.record.record_id for b in stream)
    assert [x["id"] for x in lines] != [b.record.record_id for b in stream]  # shuffled
    assert all(set(x) >= {"id", "text", "time", "channel"} for x in lines)
    gold = {b.record.record_id: b.incident_id or b.record.record_id for b in stream}

    def check(cases: dict[str, str]) -> dict:
        out = tmp_path / "out.jsonl"
        out.write_text("".join(json.dumps({"id": k, "case_id": v}) + "\n"
                               for k, v in cases.items()))
        return check_merge(truth, out)

    perfect = check(gold)
    assert perfect["pairwise"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert perfect["whole_share"] == 1.0 and perfect["rejected"] == 0
    alone = check({k: k for k in gold})
    assert alone["pairwise"]["recall"] == 0.0 and alone["whole_share"] == 0.0
    dropped = dict(list(gold.items())[1:])
    assert check(dropped)["rejected"] == 1
