"""models.vision.compose: seeded scenes are reproducible, their labels valid; on synthetic
backgrounds and textures (no package files needed)."""

from __future__ import annotations

import numpy as np
import pytest

from models.vision import compose
from models.vision.compose import CITY_CLASSES, Scene, add_pseudo_labels, compose_scene, scene_rng


def backgrounds() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 600, dtype=np.float32)[:, None, None]
    street = np.clip(ramp + rng.normal(0, 10, (600, 800, 3)), 0, 255).astype(np.uint8)
    flat = np.full((480, 640, 3), 128, np.uint8)
    return [("street", street), ("flat", flat)]


def textures() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        name: rng.integers(0, 256, (128, 128), dtype=np.uint8) for name in compose.TEXTURE_NAMES
    }


PHOTOS, TEXTURES = backgrounds(), textures()


def scene(seed: int, index: int, **kwargs: object) -> Scene:
    return compose_scene(scene_rng(seed, index), PHOTOS, TEXTURES, **kwargs)  # type: ignore[arg-type]


def test_the_same_seed_and_index_give_the_same_scene() -> None:
    a, b = scene(5, 3), scene(5, 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.labels == b.labels and a.source == b.source
    other = scene(5, 4)
    assert not np.array_equal(a.image, other.image)
    assert not np.array_equal(scene(6, 3).image, a.image)


def test_labels_are_valid_boxes_of_the_city_classes() -> None:
    seen: set[str] = set()
    for index in range(24):
        s = scene(11, index, empty_fraction=0.0)
        height, width = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and (width, height) == (
            compose.SCENE_WIDTH,
            compose.SCENE_HEIGHT,
        )
        assert len(s.boxes) == len(s.labels) == len(s.pseudo)
        assert 1 <= len(s.labels) <= 3
        assert set(s.labels) <= set(CITY_CLASSES)
        x1, y1, x2, y2 = s.boxes.T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
        assert ((x2 - x1) >= 14).all() and ((y2 - y1) >= 14).all()
        for box in s.boxes.astype(int):
            # Each box holds pasted pixels, and the scene differs from its background there.
            region = (slice(box[1], box[3]), slice(box[0], box[2]))
            assert s.pasted[region].mean() > 0.05
            assert np.abs(s.image[region].astype(int) - s.background[region].astype(int)).mean() > 3
        seen.update(s.labels)
    assert seen == set(CITY_CLASSES)  # every renderer ran


@pytest.mark.parametrize("label", CITY_CLASSES)
def test_each_renderer_gives_a_finite_patch_and_a_proper_alpha(label: str) -> None:
    rng = np.random.default_rng(3)
    canvas = np.full((200, 300, 3), 120.0, np.float32)
    if label in compose.FLAT:
        patch, alpha = compose.FLAT[label](rng, compose.Spot(canvas, 50, 100, 150, 60), TEXTURES)
        assert alpha.shape == (60, 150)
    else:
        patch, alpha = compose.UPRIGHT[label](rng, 150, 110, TEXTURES)
        assert alpha.shape == (110, 150)
    assert patch.shape == (*alpha.shape, 3) and np.isfinite(patch).all()
    visible = alpha >= compose._BOX_ALPHA.get(label, 0.5)
    assert alpha.min() >= 0 and alpha.max() <= 1 and visible.mean() > 0.05


def test_empty_scenes_have_no_city_labels() -> None:
    s = scene(2, 0, empty_fraction=1.0)
    assert s.labels == () and s.boxes.shape == (0, 4) and not s.pasted.any()


def test_pseudo_labels_hidden_by_pasted_objects_are_dropped() -> None:
    s = scene(11, 1, empty_fraction=0.0)
    x1, y1, x2, y2 = s.boxes[0]
    hidden = (x1, y1, x2, y2)  # the pasted object's own box: mostly covered
    free = np.argwhere(~s.pasted)
    fy, fx = free[len(free) // 2]
    visible = (max(0, fx - 5), max(0, fy - 5), fx + 5, fy + 5)
    labelled = add_pseudo_labels(s, np.array([hidden, visible], np.float32), ["car", "person"])
    added = [label for label, p in zip(labelled.labels, labelled.pseudo, strict=True) if p]
    assert "car" not in added
    if s.pasted[visible[1] : visible[3], visible[0] : visible[2]].mean() <= 0.3:
        assert added == ["person"]
    assert labelled.labels[: len(s.labels)] == s.labels


def test_codes_cover_the_classes() -> None:
    assert set(compose.CITY_CODES) == set(CITY_CLASSES)


def test_compose_refuses_missing_inputs() -> None:
    with pytest.raises(ValueError, match="no background"):
        compose_scene(scene_rng(0, 0), [], TEXTURES)
    with pytest.raises(ValueError, match="textures missing"):
        compose_scene(scene_rng(0, 0), PHOTOS, {})
