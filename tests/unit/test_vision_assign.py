"""models.vision.assign: the grid and ATSS-lite label assignment on tiny cases."""

from __future__ import annotations

import numpy as np
import pytest

from models.vision import assign, nanodet
from models.vision.assign import BACKGROUND, atss_assign, box_iou, distance_targets, grid


def test_constants_match_the_model_module() -> None:
    # assign.py repeats them so the torch venv needs no cv2; they must not drift.
    assert (assign.INPUT_SIZE, assign.STRIDES, assign.REG_BINS) == (
        nanodet.INPUT_SIZE, nanodet.STRIDES, nanodet.REG_BINS,
    )  # fmt: skip


def test_grid_is_the_models_cell_order() -> None:
    centres, strides, slices = grid()
    assert len(centres) == 52 * 52 + 26 * 26 + 13 * 13
    for stride, level in zip(nanodet.STRIDES, slices, strict=True):
        np.testing.assert_array_equal(centres[level], nanodet.cell_centres(stride))
        assert set(strides[level]) == {stride}


def test_no_boxes_leave_every_cell_background() -> None:
    centres, strides, slices = grid()
    assert (atss_assign(np.zeros((0, 4)), centres, strides, slices) == BACKGROUND).all()


def test_positives_lie_inside_the_box_on_the_matching_level() -> None:
    centres, strides, slices = grid()
    box = np.array([[100.0, 100.0, 164.0, 164.0]])  # 64 px: 8 cells at stride 8
    assigned = atss_assign(box, centres, strides, slices)
    pos = np.flatnonzero(assigned == 0)
    assert len(pos) > 0
    x, y = centres[pos, 0], centres[pos, 1]
    assert ((x > 100) & (x < 164) & (y > 100) & (y < 164)).all()
    # The anchors of 5 strides: 40 px at stride 8, 80 px at 16; a 64 px box is met by
    # stride 8 or 16 anchors, never by stride 32's 160 px ones.
    assert set(strides[pos]) <= {8.0, 16.0}
    assert (assigned[assigned != 0] == BACKGROUND).all()


def test_a_large_box_goes_to_the_coarse_level() -> None:
    centres, strides, slices = grid()
    assigned = atss_assign(np.array([[50.0, 50.0, 370.0, 370.0]]), centres, strides, slices)
    assert set(strides[assigned == 0]) == {32.0}


def test_a_cell_claimed_twice_goes_to_the_box_it_overlaps_most() -> None:
    centres, strides, slices = grid()
    boxes = np.array([[96.0, 96.0, 160.0, 160.0], [104.0, 100.0, 172.0, 166.0]])
    alone = [atss_assign(boxes[k : k + 1], centres, strides, slices) == 0 for k in range(2)]
    together = atss_assign(boxes, centres, strides, slices)
    half = assign.ANCHOR_SCALE * strides / 2
    anchors = np.concatenate([centres - half[:, None], centres + half[:, None]], axis=1)
    ious = box_iou(anchors, boxes)
    shared = np.flatnonzero(alone[0] & alone[1])
    assert len(shared) > 0  # the case under test happens
    np.testing.assert_array_equal(together[shared], ious[shared].argmax(axis=1))
    for k in range(2):
        only = np.flatnonzero(alone[k] & ~alone[1 - k])
        assert (together[only] == k).all()
    assert (together[~(alone[0] | alone[1])] == BACKGROUND).all()


def test_inverted_boxes_are_refused() -> None:
    centres, strides, slices = grid()
    with pytest.raises(ValueError, match="x2 > x1"):
        atss_assign(np.array([[10.0, 10.0, 5.0, 20.0]]), centres, strides, slices)


def test_distance_targets_in_strides_and_clipped() -> None:
    centres = np.array([[20.0, 20.0], [20.0, 20.0]])
    strides = np.array([8.0, 8.0])
    boxes = np.array([[12.0, 4.0, 36.0, 28.0], [-200.0, 0.0, 30.0, 30.0]])
    d = distance_targets(boxes, centres, strides)
    np.testing.assert_allclose(d[0], [1.0, 2.0, 2.0, 1.0])
    assert d[1, 0] == pytest.approx(assign.REG_BINS - 1 - 1e-3)  # 27.5 strides, clipped


def test_box_iou_known_values() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 1 / 3, 0.0])
