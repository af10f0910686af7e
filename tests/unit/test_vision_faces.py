"""models.vision.faces on synthetic model outputs whose right answer is known: anchors,
box decoding, NMS, the views (tiles) and their merge. No model, no files, no network."""

from __future__ import annotations

import numpy as np
import pytest

from models.vision import faces
from models.vision.faces import (
    ANCHORS,
    GRIDS,
    INPUT_SIZE,
    NUM_ANCHORS,
    OUTPUT_NAMES,
    REGRESSORS,
    Face,
    View,
    anchors_of,
    decode,
    decode_batch,
    merge,
    prepare,
    tile_rects,
    views,
)
from models.vision.nanodet import Placement

IDENTITY = View((0, 0, INPUT_SIZE, INPUT_SIZE), Placement(INPUT_SIZE, INPUT_SIZE, 1.0, 1.0))
HIGH, LOW = 8.0, -8.0  # logits: sigmoid 0.99966 and 0.00034


def empty_outputs() -> dict[str, np.ndarray]:
    """One view's outputs with no face: every logit very negative, zero boxes."""
    outputs = {}
    for stride, per_cell in GRIDS:
        count = anchors_of(stride, per_cell)
        outputs[faces.scores_output(stride)] = np.full((count, 1), LOW, np.float32)
        outputs[faces.boxes_output(stride)] = np.zeros((count, REGRESSORS), np.float32)
    return outputs


def put(
    outputs: dict[str, np.ndarray],
    stride: int,
    col: int,
    row: int,
    anchor: int,
    logit: float,
    offset: tuple[float, float],
    size: tuple[float, float],
) -> tuple[float, float, float, float]:
    """Light one anchor; returns the box (input pixels) that must come out."""
    per_cell = dict(GRIDS)[stride]
    index = (row * (INPUT_SIZE // stride) + col) * per_cell + anchor
    outputs[faces.scores_output(stride)][index, 0] = logit
    outputs[faces.boxes_output(stride)][index, :4] = (*offset, *size)
    cx = (col + 0.5) * stride + offset[0]
    cy = (row + 0.5) * stride + offset[1]
    return (cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2)


def put_box(
    outputs: dict[str, np.ndarray], logit: float, box: tuple[float, float, float, float]
) -> None:
    """Light the stride-16 anchor whose cell holds ``box``'s centre (input pixels)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col, row = int(cx // 16), int(cy // 16)
    offset = (cx - (col + 0.5) * 16, cy - (row + 0.5) * 16)
    put(outputs, 16, col, row, 0, logit, offset, (box[2] - box[0], box[3] - box[1]))


# ------------------------------------------------------------------------------ anchors


def test_the_anchors_are_the_cell_centres_row_by_row_each_repeated_per_cell():
    assert NUM_ANCHORS == 896 == len(ANCHORS)
    # Stride 16: cells 16 a side, 2 anchors each; the first two share cell (0, 0).
    assert ANCHORS[0].tolist() == ANCHORS[1].tolist() == [8.0, 8.0]
    assert ANCHORS[2].tolist() == [24.0, 8.0]  # next column, same row
    assert ANCHORS[2 * 16].tolist() == [8.0, 24.0]  # first cell of the second row
    assert ANCHORS[511].tolist() == [248.0, 248.0]
    # Stride 32: 8 a side, 6 anchors each, after the 512 of stride 16.
    assert ANCHORS[512:518].tolist() == [[16.0, 16.0]] * 6
    assert ANCHORS[518].tolist() == [48.0, 16.0]
    assert ANCHORS[-1].tolist() == [240.0, 240.0]


# ----------------------------------------------------------------------------- decoding


def test_a_lit_anchor_decodes_to_its_exact_box_and_score():
    outputs = empty_outputs()
    # Column 5, row 3 of the stride-16 grid, second anchor: centre (88, 56) + (4, -2).
    box = put(outputs, 16, 5, 3, 1, HIGH, (4.0, -2.0), (40.0, 50.0))
    assert box == (72.0, 29.0, 112.0, 79.0)
    [face] = decode([outputs], [IDENTITY])
    assert face.box == pytest.approx(box, abs=1e-5)
    assert face.score == pytest.approx(1 / (1 + np.exp(-HIGH)))


def test_the_coarse_grid_uses_its_own_stride_and_anchor_count():
    outputs = empty_outputs()
    # Column 6, row 2 of the stride-32 grid (centre (208, 80)), its last anchor.
    box = put(outputs, 32, 6, 2, 5, HIGH, (0.0, 0.0), (60.0, 60.0))
    [face] = decode([outputs], [IDENTITY])
    assert face.box == pytest.approx(box) == (178.0, 50.0, 238.0, 110.0)


def test_scores_below_the_threshold_and_non_finite_values_give_nothing():
    outputs = empty_outputs()
    put(outputs, 16, 1, 1, 0, 0.0, (0.0, 0.0), (20.0, 20.0))  # sigmoid 0.5: not above
    put(outputs, 16, 9, 9, 0, np.nan, (0.0, 0.0), (20.0, 20.0))
    put(outputs, 32, 3, 3, 0, HIGH, (np.inf, 0.0), (20.0, 20.0))
    assert decode([outputs], [IDENTITY]) == []
    # Clipped like MediaPipe: a logit of 1e6 is a score of 1, not an overflow.
    put(outputs, 16, 4, 4, 0, 1e6, (0.0, 0.0), (20.0, 20.0))
    [face] = decode([outputs], [IDENTITY])
    assert face.score == 1.0


def test_overlapping_anchors_are_merged_into_one_face_covering_both():
    outputs = empty_outputs()
    a = put(outputs, 16, 5, 5, 0, HIGH, (0.0, 0.0), (40.0, 40.0))
    b = put(outputs, 16, 5, 5, 1, 2.0, (4.0, 4.0), (40.0, 40.0))  # IoU 0.68 with a
    far = put(outputs, 32, 6, 6, 0, 3.0, (0.0, 0.0), (30.0, 30.0))
    found = decode([outputs], [IDENTITY])
    assert [f.score for f in found] == pytest.approx([0.99966, 0.95257], abs=1e-4)
    assert found[0].box == pytest.approx((a[0], a[1], b[2], b[3]))  # the union
    assert found[1].box == pytest.approx(far)


def test_merge_joins_a_box_lying_inside_a_better_one_and_keeps_apart_ones():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 40, 40], [200, 0, 260, 60], [90, 0, 140, 50]])
    scores = np.array([0.6, 0.9, 0.8, 0.7])
    merged, best = merge(boxes.astype(float), scores)
    # The small box (0.9) is inside the big one: one face, the union, the best score.
    assert best.tolist() == [0.9, 0.8, 0.7]
    assert merged.tolist() == [[0, 0, 100, 100], [200, 0, 260, 60], [90, 0, 140, 50]]
    empty_boxes, empty_scores = merge(np.zeros((0, 4)), np.zeros(0))
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_outputs_of_the_wrong_shape_are_refused():
    outputs = empty_outputs()
    outputs[faces.boxes_output(32)] = np.zeros((384, 4), np.float32)
    with pytest.raises(ValueError, match="stride 32"):
        decode([outputs], [IDENTITY])
    with pytest.raises(ValueError, match="1 views' outputs for 2 views"):
        decode([empty_outputs()], [IDENTITY, IDENTITY])


# -------------------------------------------------------------------- views and mapping


def test_a_small_image_is_one_letterboxed_view_in_rgb_minus_one_to_one():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :, 0] = 255  # pure blue in BGR
    rows, [view] = views(image)
    assert rows.shape == (1, INPUT_SIZE, INPUT_SIZE, 3) and rows.dtype == np.float32
    assert view.rect == (0, 0, 200, 100)
    # 200 wide → scale 1.28, 128 rows high, centred: 64 rows of black above.
    assert view.placement.scale_x == view.placement.scale_y == pytest.approx(1.28)
    assert rows[0, 0, 0].tolist() == [-1.0, -1.0, -1.0]  # the black bar
    assert rows[0, 128, 128].tolist() == [-1.0, -1.0, 1.0]  # blue is the last of RGB


def test_large_images_add_overlapping_tiles_that_cover_them():
    rects = tile_rects(1280, 720)
    assert rects[0] == (0, 0, 1280, 720)
    tiles = rects[1:]
    assert len(tiles) == 6 and all(r[2] - r[0] == r[3] - r[1] == 512 for r in tiles)
    covered = np.zeros((720, 1280), bool)
    for x0, y0, x1, y1 in tiles:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({r[0] for r in tiles})
    assert all(b - a <= 512 - 128 for a, b in zip(xs, xs[1:], strict=False))  # overlap ≥ 128
    assert tile_rects(1280, 720, tile=None) == [(0, 0, 1280, 720)]
    assert tile_rects(700, 700) == [(0, 0, 700, 700)]  # under 1.5 tiles: whole only
    # A long thin image: tiles as high as the image.
    assert {r[3] - r[1] for r in tile_rects(2000, 300)[1:]} == {300}


def test_a_face_seen_in_a_tile_maps_back_to_the_whole_images_pixels():
    image = np.zeros((720, 1280, 3), np.uint8)
    rows, image_views = views(image)
    tile = image_views[3]  # second row of tiles
    x0, y0, x1, y1 = tile.rect
    outputs = [empty_outputs() for _ in image_views]
    # In the tile's input: a 512-pixel tile is scaled by 0.5, no bars.
    box = put(outputs[3], 16, 8, 8, 0, HIGH, (0.0, 0.0), (20.0, 20.0))
    [face] = decode(outputs, image_views)
    expected = (x0 + box[0] * 2, y0 + box[1] * 2, x0 + box[2] * 2, y0 + box[3] * 2)
    assert face.box == pytest.approx(expected)


def test_the_same_face_in_the_whole_view_and_a_tile_is_one_face():
    image = np.zeros((720, 1280, 3), np.uint8)
    _, image_views = views(image)
    outputs = [empty_outputs() for _ in image_views]
    face = (600.0, 300.0, 700.0, 400.0)
    # The whole view: 1280 → 256 is a scale of 0.2, under 56 rows of bar.
    put_box(outputs[0], HIGH, (120.0, 116.0, 140.0, 136.0))
    # The first tile holding it, (384, 0)-(896, 512), sees it at half scale.
    assert image_views[2].rect == (384, 0, 896, 512)
    put_box(outputs[2], 3.0, (108.0, 150.0, 158.0, 200.0))
    [found] = decode(outputs, image_views)
    assert found.box == pytest.approx(face)
    assert found.score == pytest.approx(1 / (1 + np.exp(-HIGH)))


def test_boxes_outside_the_image_are_dropped_and_edges_clipped():
    image = np.zeros((100, 256, 3), np.uint8)  # letterboxed: bars of 78 rows
    _, image_views = views(image)
    outputs = empty_outputs()
    put(outputs, 16, 3, 0, 0, HIGH, (0.0, 0.0), (10.0, 10.0))  # wholly in the top bar
    put(outputs, 16, 0, 6, 0, HIGH, (-4.0, 0.0), (20.0, 20.0))  # over the left edge
    [face] = decode([outputs], image_views)
    # Input (-6, 94)-(14, 114) → image (0, 16)-(14, 36): clipped at the left edge.
    assert face.box == pytest.approx((0.0, 16.0, 14.0, 36.0))


def test_decode_batch_splits_rows_by_each_images_views():
    images = [np.zeros((720, 1280, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)]
    rows, per_image = prepare(images)
    assert [len(v) for v in per_image] == [7, 1] and len(rows) == 8
    batch = {name: np.stack([empty_outputs()[name]] * 8) for name in OUTPUT_NAMES}
    lit = empty_outputs()
    put(lit, 32, 4, 4, 2, HIGH, (0.0, 0.0), (64.0, 64.0))  # the small image's one view
    for name in OUTPUT_NAMES:
        batch[name][7] = lit[name]
    first, second = decode_batch(batch, per_image)
    assert first == []
    # 64 → 256 is a scale of 4: input box (112, 112)-(176, 176) → (28, 28)-(44, 44).
    [face] = second
    assert isinstance(face, Face)
    assert face.box == pytest.approx((28.0, 28.0, 44.0, 44.0))
    assert face.score == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="expected 8 views"):
        decode_batch({name: batch[name][:7] for name in OUTPUT_NAMES}, per_image)
    with pytest.raises(ValueError, match="lack"):
        decode_batch({OUTPUT_NAMES[0]: batch[OUTPUT_NAMES[0]]}, per_image)


def test_images_must_be_bgr_uint8():
    with pytest.raises(ValueError, match="uint8"):
        views(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="H×W×3"):
        views(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="no images"):
        prepare([])


# ------------------------------------------------------------------------------ runner


class RecordingBackend:
    """An inference backend that answers "no face" and records each request's rows."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        [rows] = inputs.values()
        self.requests.append((model, len(rows)))
        return {name: np.stack([empty_outputs()[name]] * len(rows)) for name in OUTPUT_NAMES}

    def check_model(self, expected: object) -> None: ...

    def close(self) -> None: ...


def test_the_runner_sends_an_images_views_in_requests_of_at_most_max_batch_rows():
    from models.vision.face_detector import FaceDetector

    backend = RecordingBackend()
    detector = FaceDetector(backend, max_batch=4)  # type: ignore[arg-type]
    images = [np.zeros((720, 1280, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)]
    assert detector.detect(images) == [[], []]
    # 7 views + 1: requests of 4 and 4 rows, all to the blazeface model.
    assert backend.requests == [("blazeface", 4), ("blazeface", 4)]
    # max_batch 5: images 5 at a time (7+1+7+1+7 = 23 rows, then 1), rows 5 a request.
    backend.requests.clear()
    detector = FaceDetector(backend, max_batch=5)  # type: ignore[arg-type]
    assert detector.detect(images * 3) == [[]] * 6
    assert [rows for _, rows in backend.requests] == [5, 5, 5, 5, 3, 1]
