"""The hand-written evaluation set (models/eval/handwritten.jsonl) against the domain file.

The set is labelled by hand; these checks make sure every label is consistent with the
reference domain and its dispatch rule, which is re-implemented here on purpose (small,
independent of the pipeline code) so that the set cannot drift with the code it judges.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.domain import Domain
from streams.settings import Settings

SET_FILE = Path(__file__).resolve().parents[2] / "models" / "eval" / "handwritten.jsonl"

FIELDS = {
    "id",
    "text",
    "channel",
    "reported_at",
    "code",
    "location_type",
    "owner",
    "district",
    "street",
    "unit",
    "style",
    "note",
}
CHANNELS = {"hotline_12345", "app", "wechat", "web", "letter", "grid_inspector"}
N_LABELLED = 56
N_REVIEW = 8

# Manhole-cover markings per owner, as listed in the domain's unit_rules.
MARKINGS = {
    "water": ("上水", "自来水"),
    "sewer": ("污水",),
    "storm": ("雨水",),
    "power": ("电力",),
    "gas": ("燃气",),
    "heating": ("热力",),
    "telecom": ("通信", "电信", "联通", "移动"),
}

# Enough traditional -> simplified to find place names in the traditional-script reports.
TRAD = str.maketrans("區島黃萊膠滄嶗陽東門內", "区岛黄莱胶沧崂阳东门内")


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(Settings().domain_file)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return json.loads(Settings().domain_file.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def reports() -> list[dict[str, Any]]:
    lines = SET_FILE.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        assert line.strip(), f"blank line {n}"
        out.append(json.loads(line))
    return out


def labelled(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reports if r.get("expect") != "review"]


def route_of(raw: dict[str, Any], r: dict[str, Any]) -> str | None:
    """The unrouted unit key (D:…, S, U:…) for a report, or None if it cannot be told."""
    if r["code"] is None or r["location_type"] is None:
        return None
    entry = next(t for t in raw["taxonomy"] if t["code"] == r["code"])
    route = entry.get("location_overrides", {}).get(r["location_type"], entry["default_unit"])
    if route == "by_owner":
        if r["owner"] is None:
            return None
        route = raw["owner_routes"][r["owner"]]
    return route


def expand(raw: dict[str, Any], route: str, district: str | None, street: str | None) -> str | None:
    """The dispatch rule's expansion; None when the report lacks what the route needs."""
    if route.startswith("U:"):
        return raw["utilities"][route[2:]]
    if route.startswith("D:"):
        return f"{district}{route[2:]}" if district else None
    if route == "S":
        if not street:
            return None
        if street.endswith("街道"):
            return f"{street}办事处"
        if street.endswith("镇"):
            return f"{street}人民政府"
        raise AssertionError(f"street {street} is neither 街道 nor 镇")
    raise AssertionError(f"unknown route {route}")


def expected_unit(raw: dict[str, Any], r: dict[str, Any]) -> str | None:
    route = route_of(raw, r)
    return None if route is None else expand(raw, route, r["district"], r["street"])


def test_shape(reports):
    assert len(reports) == N_LABELLED + N_REVIEW
    ids = [r["id"] for r in reports]
    assert len(set(ids)) == len(ids)
    assert ids == [f"hw-{i:03d}" for i in range(1, len(reports) + 1)]
    texts = [r["text"] for r in reports]
    assert len(set(texts)) == len(texts), "every report must be worded differently"
    for r in reports:
        missing = FIELDS - r.keys()
        assert not missing, (r["id"], missing)
        assert set(r) <= FIELDS | {"expect"}, r["id"]
        assert r["text"].strip() and r["note"].strip() and r["style"].strip(), r["id"]
        assert r["channel"] in CHANNELS, r["id"]
        at = datetime.fromisoformat(r["reported_at"])
        assert at.year == 2026 and at.utcoffset() == timedelta(hours=8), r["id"]


def test_names_exist(reports, domain, raw):
    for r in reports:
        if r["code"] is not None:
            assert r["code"] in domain.event_types, r["id"]
        if r["location_type"] is not None:
            assert r["location_type"] in domain.location_types, r["id"]
        if r["district"] is not None:
            assert r["district"] in domain.districts, r["id"]
        if r["street"] is not None:
            assert domain.street_district.get(r["street"]) == r["district"], r["id"]
        if r["code"] == "E01":
            assert r["owner"] in raw["owner_routes"], r["id"]
        else:
            assert r["owner"] is None, r["id"]


def test_labelled_units_follow_the_rule(reports, raw):
    for r in labelled(reports):
        assert "expect" not in r, r["id"]
        for key in ("code", "location_type", "district"):
            assert r[key] is not None, (r["id"], key)
        assert r["unit"] == expected_unit(raw, r), r["id"]


def test_labelled_text_names_the_place(reports, domain, raw):
    """A human dispatcher must be able to find the district (and street, if routed there)."""
    for r in labelled(reports):
        text = r["text"].translate(TRAD)
        names = [n for n, d in domain.district_names.items() if d == r["district"]]
        names.append(re.sub("[区市]$", "", r["district"]))
        names += [s for s, d in domain.street_district.items() if d == r["district"]]
        assert any(n in text for n in names), r["id"]
        if route_of(raw, r) == "S":
            root = re.sub("(街道|镇)$", "", r["street"])
            assert root in text, r["id"]


def test_manhole_markings(reports):
    for r in reports:
        if r["code"] != "E01":
            continue
        if r["owner"] == "unknown":
            found = [m for ms in MARKINGS.values() for m in ms if m in r["text"]]
            assert not found, (r["id"], found)
        else:
            assert any(m in r["text"] for m in MARKINGS[r["owner"]]), r["id"]


def test_review_items(reports, raw):
    review = reports[N_LABELLED:]
    assert [r["id"] for r in review] == [f"hw-{i:03d}" for i in range(57, 65)]
    assert all(r.get("expect") == "review" for r in review)
    assert all(r.get("expect") != "review" for r in reports[:N_LABELLED])
    for r in review:
        assert r["unit"] is None, r["id"]
        # Either the labels cannot complete the rule, or two problems compete (code null).
        assert expected_unit(raw, r) is None, r["id"]


def test_coverage(reports, domain, raw):
    lab = labelled(reports)
    assert len(lab) >= N_LABELLED
    assert len({r["code"] for r in lab}) >= 30
    assert {r["location_type"] for r in lab} == set(domain.location_types)
    assert {r["district"] for r in lab} == set(domain.districts)
    s_routed = {r["street"] for r in lab if route_of(raw, r) == "S"}
    assert len(s_routed) >= 6
    assert any(s.endswith("镇") for s in s_routed)
    assert set(raw["utilities"].values()) <= {r["unit"] for r in lab}
    assert {r["channel"] for r in reports} == CHANNELS
    owners = {r["owner"] for r in lab if r["code"] == "E01"}
    assert "unknown" in owners and len(owners) >= 5
