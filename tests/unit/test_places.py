"""resolve_place against the reference domain (Qingdao)."""

from __future__ import annotations

import pytest

from processors.ingest import Place, resolve_place
from schemas.domain import Domain
from schemas.errors import ErrorKind, RecordError


def _roads_in_several(domain: Domain) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((r, ds) for r, ds in domain.road_districts.items() if len(ds) > 1)


def _roads_in_one(domain: Domain) -> list[tuple[str, str]]:
    return sorted((r, ds[0]) for r, ds in domain.road_districts.items() if len(ds) == 1)


def _street_of(domain: Domain, district: str) -> str:
    streets = domain.street_district.items()
    return next(s for s, d in streets if d == district and s.endswith("街道"))


def test_no_place_at_all(domain):
    assert resolve_place(domain, None, None, None) == Place("", "", "", ())
    assert resolve_place(domain, "", "", "") == Place("", "", "", ())


@pytest.mark.parametrize("name", ["市南区", "黄岛区", "莱西市"])
def test_canonical_district_kept(domain, name):
    assert resolve_place(domain, name, None, None) == Place(name, "", "", ())


@pytest.mark.parametrize("alias", ["西海岸新区", "青岛西海岸新区", "西海岸", " 西海岸新区 "])
def test_alias_resolves_to_canonical_district(domain, alias):
    place = resolve_place(domain, alias, None, None)
    assert place.district == "黄岛区"
    assert place.warnings == ()


def test_every_alias_in_domain_resolves(domain):
    aliases = {a: d for a, d in domain.district_names.items() if a != d}
    assert aliases, "the reference domain should have aliases"
    for alias, district in aliases.items():
        assert resolve_place(domain, alias, None, None).district == district


@pytest.mark.parametrize("name", ["海淀区", "青岛市", "市南", "Shinan", "黄 岛区"])
def test_unknown_district_raises(domain, name):
    with pytest.raises(RecordError) as info:
        resolve_place(domain, name, None, None)
    assert info.value.kind is ErrorKind.UNKNOWN_PLACE
    assert repr(name) in info.value.reason


def test_known_street_implies_district(domain):
    for street, district in domain.street_district.items():
        place = resolve_place(domain, None, street, None)
        assert (place.district, place.street, place.warnings) == (district, street, ())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("八大关街道办事处", "八大关街道"),  # full office name
        ("八大关", "八大关街道"),  # without the 街道 suffix
        (" 八大关街道 ", "八大关街道"),
        ("八大关办事处", "八大关街道"),  # office name without 街道
    ],
)
def test_street_spellings_canonicalised(domain, given, expected):
    assert domain.street_district[expected] == "市南区"
    place = resolve_place(domain, None, given, None)
    assert place.street == expected
    assert place.district == "市南区"
    assert place.warnings == ()


def test_street_and_matching_district(domain):
    place = resolve_place(domain, "市南区", "八大关街道", None)
    assert place == Place("市南区", "八大关街道", "", ())


def test_street_and_alias_of_its_district_do_not_conflict(domain):
    street = _street_of(domain, "黄岛区")
    place = resolve_place(domain, "西海岸新区", street, None)
    assert place == Place("黄岛区", street, "", ())


def test_street_district_conflict_street_wins_with_warning(domain):
    place = resolve_place(domain, "崂山区", "八大关街道", None)
    assert place.district == "市南区"
    assert place.street == "八大关街道"
    assert "district_conflicts_with_street" in place.warnings


def test_unknown_street_kept_with_warning(domain):
    place = resolve_place(domain, "市南区", " 不存在街道 ", None)
    assert place.district == "市南区"
    assert place.street == "不存在街道"
    assert place.warnings == ("unknown_street",)


def test_unknown_street_without_district_leaves_district_empty(domain):
    place = resolve_place(domain, None, "不存在街道", None)
    assert place.district == ""
    assert "unknown_street" in place.warnings


def test_road_in_one_district_fills_district(domain):
    roads = _roads_in_one(domain)
    assert roads
    for road, district in roads:
        place = resolve_place(domain, None, None, road)
        assert (place.district, place.road, place.warnings) == (district, road, ())


def test_road_in_several_districts_warns_and_leaves_district_empty(domain):
    several = _roads_in_several(domain)
    assert several, "the reference domain should have a road in more than one district"
    for road, _districts in several:
        place = resolve_place(domain, None, None, road)
        assert place.district == ""
        assert place.road == road
        assert place.warnings == ("road_in_several_districts",)


def test_road_in_several_districts_with_one_of_them_given(domain):
    road, districts = _roads_in_several(domain)[0]
    for district in districts:
        assert resolve_place(domain, district, None, road) == Place(district, "", road, ())


def test_road_not_in_given_district_warns(domain):
    road, district = _roads_in_one(domain)[0]
    other = next(d for d in domain.districts if d != district)
    place = resolve_place(domain, other, None, road)
    assert place.district == other  # the district given is kept
    assert place.road == road
    assert place.warnings == ("road_not_in_district",)


def test_unknown_road_warns(domain):
    place = resolve_place(domain, "市南区", None, " 不存在路 ")
    assert place.road == "不存在路"
    assert place.warnings == ("unknown_road",)


def test_street_fixes_district_before_road_check(domain):
    # The street's district is used to check the road, not the (conflicting) one given.
    road, road_district = _roads_in_one(domain)[0]
    street = _street_of(domain, road_district)
    other = next(d for d in domain.districts if d != road_district)
    place = resolve_place(domain, other, street, road)
    assert place.district == road_district
    assert place.warnings == ("district_conflicts_with_street",)
