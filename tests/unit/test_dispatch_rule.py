from __future__ import annotations

import pytest

from processors.dispatch_rule import (
    RuleError,
    all_routes,
    dispatch_unit,
    read_owner,
    route_for,
    route_of_unit,
    street_office,
    unit_for,
)


def test_default_unit_without_override(domain):
    assert route_for(domain, "A09", "residential", None) == "D:城市管理局"
    res = dispatch_unit(domain, "A09", "residential", None, "市南区", "八大关街道")
    assert res.unit == "市南区城市管理局"


def test_location_override_to_street_office(domain):
    res = dispatch_unit(domain, "A01", "residential", None, "市南区", "八大关街道")
    assert (res.route, res.unit) == ("S", "八大关街道办事处")


def test_override_to_other_department(domain):
    assert dispatch_unit(domain, "A01", "park_square", None, "崂山区", None).unit == (
        "崂山区园林和林业局"
    )


def test_town_gets_its_government(domain):
    assert street_office("王台镇") == "王台镇人民政府"
    # 惜福镇街道 is a 街道 whose name contains 镇: an office, not a town government.
    assert street_office("惜福镇街道") == "惜福镇街道办事处"


def test_utility_route_ignores_place(domain):
    assert dispatch_unit(domain, "E07", "residential", None, None, None).unit == "青岛市燃气集团"


@pytest.mark.parametrize(
    ("owner", "unit"),
    [
        ("water", "青岛市供水集团"),
        ("sewer", "市北区水务局"),
        ("storm", "市北区水务局"),
        ("power", "国网青岛供电公司"),
        ("gas", "青岛市燃气集团"),
        ("heating", "青岛市热力集团"),
        ("telecom", "青岛市通信管线联合办公室"),
        ("unknown", "市北区市政设施服务中心"),
        (None, "市北区市政设施服务中心"),
    ],
)
def test_manhole_cover_goes_by_owner(domain, owner, unit):
    assert dispatch_unit(domain, "E01", "main_road", owner, "市北区", None).unit == unit


def test_missing_place_is_reported_not_guessed(domain):
    assert unit_for(domain, "S", "市南区", None).missing == "street"
    assert unit_for(domain, "D:水务局", None, "八大关街道").missing == "district"
    assert unit_for(domain, "S", None, None).unit is None


def test_unknown_inputs_are_errors(domain):
    with pytest.raises(RuleError, match="unknown event code"):
        route_for(domain, "Z99", None, None)
    with pytest.raises(RuleError, match="unknown location type"):
        route_for(domain, "A01", "moon", None)
    with pytest.raises(RuleError, match="unknown street"):
        unit_for(domain, "S", "市南区", "不存在街道")
    with pytest.raises(RuleError, match="not D:<department>"):
        unit_for(domain, "X:y", "市南区", None)


def test_route_of_unit_inverts_the_expansion(domain):
    for route in all_routes(domain):
        res = unit_for(domain, route, "李沧区", "李村街道")
        assert route_of_unit(domain, res.unit) == route
    assert route_of_unit(domain, "市南区公安分局交通警察大队") == "D:公安分局交通警察大队"
    assert route_of_unit(domain, "某某公司") is None


def test_all_routes_cover_every_rule_outcome(domain):
    routes = set(all_routes(domain))
    for code in domain.event_types:
        for loc in domain.location_types:
            for owner in (*domain.owner_routes, None):
                assert route_for(domain, code, loc, owner) in routes
    assert "by_owner" not in routes


def test_owner_markings_come_from_the_domain_file(domain):
    assert domain.owner_markings["自来水"] == "water"
    assert domain.owner_markings["联通"] == "telecom"
    assert set(domain.owner_markings.values()) == set(domain.owner_routes) - {"unknown"}


@pytest.mark.parametrize(
    ("text", "owner"),
    [
        ("辽宁路上有个井盖碎了，盖子上印着电力两个字", "power"),
        ("小区门口雨水井盖丢了一个", "storm"),
        ("井盖上写的是自来水，响了好几天", "water"),
        ("路口那个联通的井盖塌了", "telecom"),
        ("井盖被移动了，露出个黑洞", "unknown"),
        ("井盖缺失，看不清是哪家的", "unknown"),
        ("8号楼前一处井盖翘起，踩上去晃动并有响声，盖面铸有“自来水”字样", "water"),
        ("井盖一直往外冒白气，盖子还裂了半拉，上头写着“热力”俩字儿", "heating"),
        # Two different owners named: not for us to pick one.
        ("两个井盖坏了，一个燃气一个热力", "unknown"),
        # A marking far from any cover is not the cover's.
        ("污水从下水道冒出来淹了半条街，味道特别大，另外路口还有个井盖坏了没人管", "unknown"),
    ],
)
def test_read_owner(domain, text, owner):
    assert read_owner(domain, text) == owner
