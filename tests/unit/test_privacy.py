"""processors.privacy on synthetic pictures: what is obscured and what is not, the input
left alone, boxes at and beyond the edges, and a raw frame never passing for a redacted
one. No model, no files (but tmp_path), no network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from processors.privacy import (
    CELLS,
    CHECK_ROUNDS,
    PLATE_BAND_DEFAULT,
    RedactedImage,
    Region,
    as_box,
    redact,
    regions,
    snapshot,
    vehicles_and_persons,
    write_snapshot,
)

H, W = 240, 320


def textured(seed: int = 0) -> np.ndarray:
    """Noise: any averaging shows, and no two pixels of a region are alike."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@dataclass(frozen=True)
class Found:
    """Stands in for a Face / NanoDet Detection: what redact reads is ``.box``."""

    box: tuple[float, float, float, float]
    class_name: str = "person"
    score: float = 0.9


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


def mask(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((H, W), bool)
    for x1, y1, x2, y2 in boxes:
        m[y1:y2, x1:x2] = True
    return m


# -------------------------------------------------------------------------------- faces


def test_a_face_is_obscured_with_its_pad_and_nothing_else_changes():
    image = textured()
    red = redact(image, [(100, 80, 150, 140)])
    # Padded by 40% of 50×60 on each side: 20 and 24 pixels.
    assert [r.box for r in red.regions] == [(80, 56, 170, 164)]
    diff = changed(image, red.pixels)
    inside = mask((80, 56, 170, 164))
    assert not diff[~inside].any()  # outside: every pixel as it was
    assert diff[inside].mean() > 0.95  # inside: (nearly) every pixel replaced
    patch = red.pixels[56:164, 80:170].astype(np.float64)
    # What is left is a smooth gradient: neighbours differ by little, unlike the noise.
    assert np.abs(np.diff(patch, axis=1)).mean() < 3
    assert np.abs(np.diff(image[56:164, 80:170].astype(np.float64), axis=1)).mean() > 50


def test_what_is_left_of_a_region_is_its_cells_mean_colours_only():
    """Two faces that differ in every pixel but agree on each cell's mean colour give the
    same redacted pixels: nothing of a face survives but ``CELLS``² colours."""
    image = textured(1)
    other = image.copy()
    # Face (60, 60)-(110, 110), padded by 20: the region (40, 40)-(130, 130), 90 pixels a
    # side, cells of 30. Shuffle the pixels inside each cell: same means, another face.
    rng = np.random.default_rng(2)
    side = 90 // CELLS
    for cy in range(CELLS):
        for cx in range(CELLS):
            y, x = 40 + cy * side, 40 + cx * side
            cell = other[y : y + side, x : x + side].reshape(-1, 3)
            other[y : y + side, x : x + side] = rng.permutation(cell).reshape(side, side, 3)
    assert changed(image, other)[40:130, 40:130].mean() > 0.9
    a, b = redact(image, [(60, 60, 110, 110)]), redact(other, [(60, 60, 110, 110)])
    assert a.regions[0].box == (40, 40, 130, 130)
    assert np.array_equal(a.pixels, b.pixels)


def test_the_input_is_never_changed_and_the_result_is_read_only():
    image = textured()
    before = image.copy()
    red = redact(image, [(10, 10, 60, 60)], [Found((100, 100, 300, 220), "car")])
    assert np.array_equal(image, before)
    assert not np.shares_memory(image, red.pixels)
    assert red.pixels.flags.writeable is False
    with pytest.raises(ValueError):
        red.pixels[0, 0] = 0


def test_nothing_to_obscure_gives_an_identical_copy():
    image = textured()
    red = redact(image, [])
    assert red.regions == () and np.array_equal(red.pixels, image)
    assert not np.shares_memory(image, red.pixels)


# ------------------------------------------------------------------ edges and oddities


def test_boxes_are_clipped_at_the_image_edges():
    image = textured()
    red = redact(image, [(-30, -30, 20, 20), (300, 200, 400, 300)])
    # Padded by 20 and 40: (-50, -50)-(40, 40) and (260, 160)-(440, 340), then clipped.
    assert [r.box for r in red.regions] == [(0, 0, 40, 40), (260, 160, 320, 240)]
    diff = changed(image, red.pixels)
    assert not diff[~mask((0, 0, 40, 40), (260, 160, 320, 240))].any()


def test_boxes_wholly_outside_are_ignored_and_a_huge_box_obscures_everything():
    image = textured()
    assert redact(image, [(-100, -100, -50, -50), (W + 50, 0, W + 90, 50)]).regions == ()
    red = redact(image, [(-1e9, -1e9, 1e9, 1e9)])
    assert [r.box for r in red.regions] == [(0, 0, W, H)]
    assert changed(image, red.pixels).mean() > 0.95


def test_degenerate_boxes():
    image = textured()
    # Corners given in the wrong order: the same rectangle.
    assert as_box((150, 140, 100, 80)) == (100.0, 80.0, 150.0, 140.0)
    # A zero-size face still gets the minimum pad (2 pixels each side).
    assert [r.box for r in redact(image, [(50, 50, 50, 50)]).regions] == [(48, 48, 52, 52)]
    # Fractional boxes cover every pixel they touch.
    assert as_box((10.2, 10.7, 20.1, 20.9)) == (10.2, 10.7, 20.1, 20.9)
    [region] = regions(W, H, [], [], [], [(10.5, 10.5, 30.5, 90.5)])  # head band 16 high
    assert region.box == (10, 10, 31, 27)
    # A box that is no box is refused: skipping it could leave a face in the picture.
    for bad in [(np.nan, 0, 10, 10), (0, 0, np.inf, 10)]:
        with pytest.raises(ValueError, match="not finite"):
            redact(image, [bad])
    with pytest.raises(ValueError, match="x1, y1, x2, y2"):
        redact(image, [(1, 2, 3)])


def test_images_must_be_bgr_uint8():
    with pytest.raises(TypeError, match="uint8"):
        redact(np.zeros((10, 10, 3), np.float32), [])
    with pytest.raises(ValueError, match="H×W×3"):
        redact(np.zeros((10, 10), np.uint8), [])


# ------------------------------------------------------------------ vehicles and people


def test_a_vehicle_without_text_gets_its_lower_band_obscured():
    image = textured()
    car = Found((100, 100, 300, 200), "car")
    red = redact(image, [], [car])
    top = round(200 - PLATE_BAND_DEFAULT * 100)
    assert red.regions == (Region("plate-band", (100, top, 300, 200)),)
    assert not changed(image, red.pixels)[:top].any()


def test_buses_and_lorries_get_a_narrower_band():
    [bus] = regions(W, H, [], [Found((0, 0, 300, 200), "bus")])
    assert bus.box == (0, 140, 300, 200)


def test_a_plate_read_by_ocr_on_a_vehicle_replaces_the_band():
    image = textured()
    car = Found((100, 100, 300, 200), "car")
    plate = ((180, 170), (230, 170), (230, 185), (180, 185))  # an OCR quad, 50×15
    sign = (10, 10, 90, 30)  # text off any vehicle: a shop sign stays readable
    red = redact(image, [], [car], text_boxes=[plate, sign])
    # Padded by 20% of 50×15: 10 and 3 pixels.
    assert red.regions == (Region("plate", (170, 167, 240, 188)),)
    assert not changed(image, red.pixels)[~mask((170, 167, 240, 188))].any()


def test_text_on_a_vehicle_that_is_not_plate_like_keeps_the_band():
    car = (100, 100, 300, 200)
    roof_sign = (150, 102, 250, 120)  # plate-shaped but at the top: a taxi sign
    tall = (120, 150, 130, 190)  # higher than wide: not a plate
    found = regions(W, H, [], [car], [roof_sign, tall])
    assert [r.kind for r in found] == ["plate", "plate", "plate-band"]


def test_a_persons_head_band_is_obscured():
    standing = (100, 20, 140, 220)  # 40 wide, 200 high: a fifth of the height
    sitting = (200, 100, 280, 180)  # 80 wide: half the width, 40 high
    found = regions(W, H, [], persons=[standing, sitting])
    assert [r.box for r in found] == [(100, 20, 140, 60), (200, 100, 280, 140)]
    assert {r.kind for r in found} == {"head"}


def test_nanodet_detections_split_into_vehicles_and_persons():
    detections = [
        Found((0, 0, 1, 1), "car"), Found((0, 0, 1, 1), "person"), Found((0, 0, 1, 1), "dog"),
        Found((0, 0, 1, 1), "motorcycle"), Found((0, 0, 1, 1), "bus"), Found((0, 0, 1, 1), "truck"),
    ]  # fmt: skip
    vehicles, persons = vehicles_and_persons(detections)
    assert [v.class_name for v in vehicles] == ["car", "motorcycle", "bus", "truck"]
    assert [p.class_name for p in persons] == ["person"]


# -------------------------------------------------------------- the only way to storage


def test_a_redacted_image_cannot_be_made_from_a_raw_array():
    frame = textured()
    with pytest.raises(TypeError, match="only by processors.privacy.redact"):
        RedactedImage(frame, (), object())
    with pytest.raises(TypeError):
        RedactedImage(frame)  # type: ignore[call-arg]


def test_only_a_redacted_image_is_written(tmp_path: Path):
    frame = textured()
    with pytest.raises(TypeError, match="only a RedactedImage"):
        write_snapshot(frame, tmp_path / "raw.jpg")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
    red = redact(frame, [(100, 80, 150, 140)])
    path = write_snapshot(red, tmp_path / "cam" / "snap.jpg")
    assert path.read_bytes()[:2] == b"\xff\xd8" and sorted(tmp_path.rglob("*")) == [
        tmp_path / "cam",
        path,
    ]


def test_snapshot_is_the_jpeg_of_the_redacted_image():
    frame = textured()
    face = (100, 80, 150, 140)
    jpeg = snapshot(frame, [Found(face)], quality=95)
    assert jpeg == redact(frame, [face]).to_jpeg(95)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape
    # The face's region in the stored picture is far from the original pixels there.
    x1, y1, x2, y2 = 80, 56, 170, 164
    original = frame[y1:y2, x1:x2].astype(int)
    assert np.abs(decoded[y1:y2, x1:x2].astype(int) - original).mean() > 40
    with pytest.raises(ValueError, match="quality"):
        snapshot(frame, [], quality=0)


def test_snapshot_obscures_what_its_check_still_finds():
    frame = textured()
    seen: list[np.ndarray] = []

    def check(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen.append(image)
        return [(200, 20, 240, 60)] if len(seen) == 1 else []  # a face only the 1st time

    jpeg = snapshot(frame, [(100, 80, 150, 140)], check=check)
    assert len(seen) == 2  # checked, obscured, checked again: clean
    assert seen[0].shape == frame.shape  # the check sees the decoded JPEG
    assert jpeg == redact(frame, [(100, 80, 150, 140), (200, 20, 240, 60)]).to_jpeg()


def test_snapshot_stops_checking_after_its_rounds_and_keeps_what_was_found():
    frame = textured()
    calls = []

    def always(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        calls.append(1)
        return [(10 * len(calls), 10, 10 * len(calls) + 5, 15)]

    jpeg = snapshot(frame, [], check=always)
    assert len(calls) == CHECK_ROUNDS
    found = [(10 * k, 10, 10 * k + 5, 15) for k in range(1, CHECK_ROUNDS + 1)]
    assert jpeg == redact(frame, found).to_jpeg()
