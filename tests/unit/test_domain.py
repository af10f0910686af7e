"""Loading the reference domain."""

from __future__ import annotations

import json

import pytest

from schemas.domain import Domain, DomainError
from streams.settings import Settings

MINIMAL = {
    "version": 3,
    "urgency_levels": {"normal": {"respond_minutes": "1440"}},
    "districts": {
        "甲区": {"aliases": ["甲"], "streets": ["一街道"], "roads": ["长路", "短路"]},
        "乙区": {"streets": ["二街道"], "roads": ["长路"]},
    },
    "location_types": {"main_road": "主次干道"},
    "taxonomy": [{"code": "A01", "class": "市容", "name": "垃圾", "urgency": "normal"}],
}


def test_reference_domain_loads(domain):
    assert "黄岛区" in domain.districts
    assert domain.canonical_district("西海岸新区") == "黄岛区"
    assert domain.canonical_district("黄岛区") == "黄岛区"
    assert domain.canonical_district("北京") is None
    assert "A01" in domain.event_types
    assert "main_road" in domain.location_types
    assert set(domain.urgency_minutes) >= {e.urgency for e in domain.event_types.values()}


def test_reference_domain_streets_are_unique():
    # Domain maps each street to one district: a street listed twice would be silently lost.
    raw = json.loads(Settings().domain_file.read_text(encoding="utf-8"))
    streets = [s for info in raw["districts"].values() for s in info["streets"]]
    assert len(streets) == len(set(streets))


def test_from_dict():
    d = Domain.from_dict(MINIMAL)
    assert d.version == 3
    assert d.districts == ("甲区", "乙区")
    assert d.district_names == {"甲区": "甲区", "甲": "甲区", "乙区": "乙区"}
    assert d.street_district == {"一街道": "甲区", "二街道": "乙区"}
    assert d.road_districts == {"长路": ("甲区", "乙区"), "短路": ("甲区",)}
    assert d.location_types == ("main_road",)
    assert d.event_types["A01"].default_unit == ""
    assert d.urgency_minutes == {"normal": 1440}


@pytest.mark.parametrize("drop", ["districts", "taxonomy", "location_types", "urgency_levels"])
def test_from_dict_missing_section(drop):
    data = {k: v for k, v in MINIMAL.items() if k != drop}
    with pytest.raises(DomainError) as info:
        Domain.from_dict(data)
    assert drop in str(info.value)


def test_from_dict_wrong_shape():
    with pytest.raises(DomainError):
        Domain.from_dict({**MINIMAL, "districts": ["甲区"]})


def test_load_missing_file(tmp_path):
    with pytest.raises(DomainError) as info:
        Domain.load(tmp_path / "nope.json")
    assert "CITYSTREAM_DOMAIN_FILE" in str(info.value)


def test_load_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(DomainError) as info:
        Domain.load(path)
    assert "not valid JSON" in str(info.value)


def test_load_round_trip(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(MINIMAL, ensure_ascii=False), encoding="utf-8")
    assert Domain.load(path) == Domain.from_dict(MINIMAL)
