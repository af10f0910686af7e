"""Camera configuration: the example file, zone scaling, and hostile configurations."""

import json
from pathlib import Path

import pytest

from processors.camera_config import (
    CameraConfigError,
    load_camera_config,
    load_camera_configs,
    parse_camera_config,
    point_in_polygon,
)
from tests.unit.vision_factories import camera, camera_data

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "cameras" / "vtest.json"


def test_the_vtest_example_is_valid_for_the_city(domain):
    config = load_camera_config(EXAMPLE, domain, classes={"person", "car", "truck", "bus",
                                                          "bicycle", "motorcycle"})
    assert config.camera_id == "cam-vtest" and config.reference_size == (768, 576)
    assert {z.kind for z in config.zones} == {"no_parking", "pavement"}
    assert all(r.code is None or r.code in domain.event_types for r in config.rules)
    # The parked van at the top right of vtest.avi stands on the service road's kerb.
    assert point_in_polygon(688, 98, config.zone("service_road").polygon)


def test_polygons_scale_with_the_frame_size():
    config = camera()
    assert config.zone_polygons(1000, 500)["lane"] == ((0, 200), (300, 200), (300, 500), (0, 500))
    half = config.zone_polygons(500, 250)["lane"]
    assert half == ((0, 100), (150, 100), (150, 250), (0, 250))
    # A non-uniform resize (the stream's second profile stretched) scales each axis alone.
    assert config.zone_polygons(2000, 500)["walk"][0] == (700, 200)


def test_a_rule_without_a_name_is_named_after_its_zone_and_kind():
    data = camera_data()
    del data["rules"][0]["name"]
    assert camera(rules=data["rules"]).rules[0].name == "lane.dwell"


def _error(data: object, **kwargs) -> str:
    with pytest.raises(CameraConfigError) as caught:
        parse_camera_config(data, **kwargs)
    return str(caught.value)


def _with_zone(polygon: list[list[float]]) -> dict:
    data = camera_data()
    data["zones"][0]["polygon"] = polygon
    return data


@pytest.mark.parametrize(("polygon", "expected"), [
    ([[0, 0], [10, 0]], "at least 3"),
    ([[0, 0], [100, 100], [100, 0], [0, 100]], "self-intersecting"),
    ([[0, 0], [50, 50], [100, 100]], "no area"),
    ([[0, 0], [100, 0], [100, 100], [0, 0]], "repeats a point"),
    ([[0, 0], [1200, 0], [1200, 100]], "outside the 1000×500 reference frame"),
])  # fmt: skip
def test_bad_polygons_are_refused_with_the_reason(polygon, expected):
    message = _error(_with_zone(polygon))
    assert expected in message


def test_a_rule_on_an_unknown_zone_names_the_zone():
    data = camera_data()
    data["rules"][0]["zone"] = "fire_lane_north"
    message = _error(data)
    assert "lane.parked" in message and "'fire_lane_north'" in message and "'lane'" in message


def test_negative_or_absurd_settings_are_refused():
    data = camera_data()
    data["rules"][0]["min_seconds"] = -5
    assert "rules.0.dwell.min_seconds" in _error(data)
    data = camera_data()
    data["rules"][1]["min_count"] = 0
    assert "min_count" in _error(data)
    assert "iou_threshold" in _error(camera_data(tracker={"iou_threshold": 1.5}))
    assert "score_threshold" in _error(camera_data(score_threshold=-0.1))
    data = camera_data()
    data["rules"][2]["rearm_seconds"] = float("nan")
    assert "rearm_seconds" in _error(data)
    assert "outside" in _error(_with_zone([[0, 0], [float("inf"), 0], [10, 10]]))


def test_typos_and_duplicates_are_refused():
    data = camera_data()
    data["rules"][0]["min_second"] = 60  # not a field: an error, not a silent default
    assert "min_second: Extra inputs are not permitted" in _error(data)
    data = camera_data()
    data["zones"][1]["name"] = "lane"
    assert "zone name 'lane' is used twice" in _error(data)
    data = camera_data()
    data["rules"][1]["name"] = "lane.parked"
    assert "rule name 'lane.parked' is used twice" in _error(data)
    assert "kind" in _error(camera_data(zones=[{"name": "z", "kind": "moat",
                                                  "polygon": [[0, 0], [9, 0], [9, 9]]}],
                                            rules=[]))
    groups = {"a": ["car"], "b": ["car", "truck"]}
    assert "class 'car' is in groups" in _error(camera_data(tracker={"class_groups": groups}))


def test_the_domain_checks_codes_and_place(domain):
    data = camera_data()
    data["rules"][0]["code"] = "Z99"
    assert "code 'Z99' is not in the taxonomy" in _error(data, domain=domain)
    parse_camera_config(data)  # without a domain only the code's shape is checked
    bad_place = camera_data(location={"district": "火星区", "location_type": "main_road"})
    assert "'火星区' is not a district" in _error(bad_place, domain=domain)
    bad_type = camera_data(location={"district": "市南区", "location_type": "orbit"})
    assert "location_type 'orbit'" in _error(bad_type, domain=domain)
    assert "code" in _error(camera_data(rules=[{**camera_data()["rules"][0], "code": "d3"}]))


def test_classes_the_detector_does_not_know_are_refused_when_its_classes_are_given():
    data = camera_data()
    data["rules"][1]["classes"] = ["bycicle"]
    known = {"bicycle", "motorcycle", "car", "truck", "bus", "person", "stall"}
    assert "no class ['bycicle']" in _error(data, classes=known)


def test_files_load_by_camera_and_bad_files_say_which(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(camera_data()), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps(camera_data(camera_id="cam-2")), "utf-8")
    assert sorted(load_camera_configs(tmp_path)) == ["cam-1", "cam-2"]
    (tmp_path / "c.json").write_text(json.dumps(camera_data()), encoding="utf-8")
    with pytest.raises(CameraConfigError, match="'cam-1' is configured twice"):
        load_camera_configs(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{zones: [", encoding="utf-8")
    with pytest.raises(CameraConfigError, match="broken.json is not valid JSON"):
        load_camera_config(broken)
    with pytest.raises(CameraConfigError, match="cannot read"):
        load_camera_config(tmp_path / "missing.json")
    assert "camera config" in _error([1, 2, 3])


def test_point_in_polygon_on_a_concave_zone():
    ell = ((0, 0), (100, 0), (100, 20), (20, 20), (20, 100), (0, 100))
    assert point_in_polygon(10, 90, ell) and point_in_polygon(90, 10, ell)
    assert not point_in_polygon(50, 50, ell) and not point_in_polygon(150, 10, ell)
