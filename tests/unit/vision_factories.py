"""Builders for the camera, tracker and zone-rule tests: a 1000×500 test camera with a
fire lane, a pavement and a market-free zone, and frames of hand-placed boxes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.camera_config import CameraConfig, parse_camera_config
from processors.tracker import Detected, FrameDetections

CAMERA = "cam-1"
T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
WIDTH, HEIGHT = 1000, 500

# Zones side by side: fire lane x 0..300, pavement x 350..650, market-free x 700..1000.
FIRE_LANE = [[0, 200], [300, 200], [300, 500], [0, 500]]
PAVEMENT = [[350, 200], [650, 200], [650, 500], [350, 500]]
MARKET_FREE = [[700, 200], [1000, 200], [1000, 500], [700, 500]]


def camera_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "camera_id": CAMERA,
        "location": {"district": "市南区", "street": "香港中路街道", "road": "香港中路",
                     "location_type": "main_road", "lon": 120.38, "lat": 36.06},
        "reference_size": [WIDTH, HEIGHT],
        "zones": [
            {"name": "lane", "kind": "fire_lane", "polygon": FIRE_LANE},
            {"name": "walk", "kind": "pavement", "polygon": PAVEMENT},
            {"name": "street", "kind": "market_free", "polygon": MARKET_FREE},
        ],
        "rules": [
            {"name": "lane.parked", "zone": "lane", "kind": "dwell",
             "classes": ["car", "truck", "bus"], "min_seconds": 120, "code": "D03",
             "cooldown_seconds": 300},
            {"name": "walk.bikes", "zone": "walk", "kind": "pile",
             "classes": ["bicycle", "motorcycle"], "min_count": 5, "code": "D04"},
            {"name": "walk.crowd", "zone": "walk", "kind": "crowd", "min_people": 6,
             "rearm_seconds": 30},
            {"name": "street.stall", "zone": "street", "kind": "occupied",
             "classes": ["stall"], "min_seconds": 60, "code": "D01"},
        ],
        "tracker": {"min_hits": 3, "max_age_frames": 30, "max_age_seconds": 5,
                    "max_tracks": 64, "exit_grace_seconds": 3},
    }
    data.update(overrides)
    return data


def camera(**overrides: Any) -> CameraConfig:
    return parse_camera_config(camera_data(**overrides))


def box_at(x: float, y: float, w: float = 60, h: float = 40) -> tuple[float, float, float, float]:
    """A box whose bottom-centre (ground point) is (x, y)."""
    return (x - w / 2, y - h, x + w / 2, y)


def frame(
    seq: int,
    seconds: float,
    objects: Iterable[tuple[tuple[float, float, float, float], str]] = (),
    score: float = 0.9,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> FrameDetections:
    return FrameDetections(
        camera_id=CAMERA, captured_at=T0 + timedelta(seconds=seconds), seq=seq,
        width=size[0], height=size[1],
        detections=tuple(Detected(box, name, score) for box, name in objects),
    )
