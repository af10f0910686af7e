"""models.vision.nanodet on synthetic model outputs whose right answer is known: no model,
no files, no network."""

from __future__ import annotations

import numpy as np
import pytest

from models.vision import nanodet
from models.vision.nanodet import (
    COCO_CLASSES,
    EDGES,
    INPUT_SIZE,
    MEAN,
    NUM_CLASSES,
    REG_BINS,
    STD,
    STRIDES,
    Detection,
    Placement,
    decode,
    decode_batch,
    distances,
    grid_side,
    preprocess,
    preprocess_batch,
)

IDENTITY = Placement(INPUT_SIZE, INPUT_SIZE, 1.0, 1.0)
PEAK = 60.0  # a bin logit this far above the others holds all but e^-60 of the mass


def empty_outputs() -> dict[str, np.ndarray]:
    """One image's outputs with nothing in them: zero scores, flat bins."""
    outputs = {}
    for stride in STRIDES:
        cells = grid_side(stride) ** 2
        outputs[nanodet.scores_output(stride)] = np.zeros((cells, NUM_CLASSES), np.float32)
        outputs[nanodet.bins_output(stride)] = np.zeros((cells, EDGES * REG_BINS), np.float32)
    return outputs


def put(
    outputs: dict[str, np.ndarray],
    stride: int,
    col: int,
    row: int,
    class_name: str,
    score: float,
    edges: tuple[int, int, int, int],
) -> tuple[float, float, float, float]:
    """A cell whose bins peak at ``edges`` (left, top, right, bottom, in strides); returns
    the box that must come out, in input pixels."""
    cell = row * grid_side(stride) + col
    outputs[nanodet.scores_output(stride)][cell, COCO_CLASSES.index(class_name)] = score
    bins = np.zeros((EDGES, REG_BINS), np.float32)
    for edge, k in enumerate(edges):
        bins[edge, k] = PEAK
    outputs[nanodet.bins_output(stride)][cell] = bins.reshape(-1)
    cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
    left, top, right, bottom = (k * stride for k in edges)
    return (cx - left, cy - top, cx + right, cy + bottom)


def test_a_peaked_cell_decodes_to_its_exact_box():
    outputs = empty_outputs()
    # Column 7, row 5 of the stride-16 grid: centre (120, 88); a cell off the diagonal,
    # so swapping rows and columns would show.
    box = put(outputs, 16, 7, 5, "car", 0.9, (2, 3, 4, 1))
    assert box == (88.0, 40.0, 184.0, 104.0)
    [found] = decode(outputs, IDENTITY)
    assert found.class_name == "car"
    assert found.score == pytest.approx(0.9)
    assert found.box == pytest.approx(box, abs=1e-6)


@pytest.mark.parametrize("stride", STRIDES)
def test_each_grid_decodes_with_its_own_stride(stride):
    outputs = empty_outputs()
    side = grid_side(stride)
    box = put(outputs, stride, side - 2, 1, "bus", 0.8, (1, 1, 1, 1))
    [found] = decode(outputs, IDENTITY)
    assert found.box == pytest.approx(box, abs=1e-6)


def test_the_distance_is_the_mean_of_the_bins_times_the_stride():
    bins = np.full((1, EDGES, REG_BINS), -1e9, np.float32)
    bins[0, 0, [2, 3]] = 0.0  # half at 2, half at 3 → 2.5
    bins[0, 1, 10] = 0.0  # all at 10
    bins[0, 2, :] = 0.0  # flat → 5
    bins[0, 3, 0] = 0.0  # all at 0
    assert distances(bins.reshape(1, -1), 8)[0] == pytest.approx([20.0, 80.0, 40.0, 0.0])


def test_overlapping_boxes_of_one_class_are_suppressed():
    outputs = empty_outputs()
    kept = put(outputs, 8, 20, 20, "person", 0.9, (3, 6, 3, 6))
    put(outputs, 8, 21, 20, "person", 0.7, (3, 6, 3, 6))  # shifted by 8 px: IoU 0.6
    [found] = decode(outputs, IDENTITY)
    assert (found.class_name, found.score) == ("person", pytest.approx(0.9))
    assert found.box == pytest.approx(kept, abs=1e-6)


def test_nms_keeps_overlapping_boxes_of_different_classes():
    outputs = empty_outputs()
    box = put(outputs, 8, 20, 20, "person", 0.9, (3, 6, 3, 6))
    cell = 20 * grid_side(8) + 20
    outputs[nanodet.scores_output(8)][cell, COCO_CLASSES.index("bicycle")] = 0.6
    found = decode(outputs, IDENTITY)
    assert [(d.class_name, round(d.score, 3)) for d in found] == [
        ("person", 0.9),
        ("bicycle", 0.6),
    ]
    assert found[0].box == found[1].box == pytest.approx(box, abs=1e-6)


def test_boxes_that_do_not_overlap_enough_are_all_kept():
    outputs = empty_outputs()
    put(outputs, 8, 10, 10, "car", 0.9, (2, 2, 2, 2))
    put(outputs, 8, 13, 10, "car", 0.8, (2, 2, 2, 2))  # IoU 1/7
    put(outputs, 32, 10, 10, "car", 0.7, (1, 1, 1, 1))  # elsewhere
    assert [d.score for d in decode(outputs, IDENTITY)] == pytest.approx([0.9, 0.8, 0.7])


def test_scores_below_the_threshold_and_empty_outputs_give_nothing():
    outputs = empty_outputs()
    assert decode(outputs, IDENTITY) == []
    put(outputs, 8, 3, 3, "dog", 0.3, (1, 1, 1, 1))
    assert decode(outputs, IDENTITY, score_threshold=0.35) == []
    assert [d.class_name for d in decode(outputs, IDENTITY, score_threshold=0.25)] == ["dog"]


def test_nan_and_inf_are_never_detections():
    outputs = empty_outputs()
    scores = outputs[nanodet.scores_output(8)]
    scores[0, :] = np.nan
    scores[1, 0] = np.inf
    scores[2, 0] = -np.inf
    # A high score over NaN box logits: no box can be given for it.
    put(outputs, 16, 4, 4, "truck", 0.95, (1, 1, 1, 1))
    outputs[nanodet.bins_output(16)][4 * grid_side(16) + 4, 5] = np.nan
    box = put(outputs, 32, 6, 6, "bicycle", 0.6, (1, 2, 1, 2))
    [found] = decode(outputs, IDENTITY)
    assert (found.class_name, found.box) == ("bicycle", pytest.approx(box, abs=1e-6))
    all_nan = {name: np.full_like(a, np.nan) for name, a in outputs.items()}
    assert decode(all_nan, IDENTITY) == []


def test_huge_bin_logits_do_not_overflow():
    outputs = empty_outputs()
    box = put(outputs, 8, 30, 30, "person", 0.9, (2, 2, 2, 2))
    outputs[nanodet.bins_output(8)][30 * grid_side(8) + 30] *= 1e30  # softmax must shift
    [found] = decode(outputs, IDENTITY)
    assert found.box == pytest.approx(box, abs=1e-6)


def test_a_flood_of_candidates_is_bounded():
    outputs = empty_outputs()
    for name, array in outputs.items():
        if name.startswith("scores"):
            array[:] = np.random.default_rng(1).uniform(0.5, 1.0, array.shape)
    found = decode(outputs, IDENTITY, max_detections=25)
    assert len(found) == 25
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_boxes_are_clipped_to_the_image():
    outputs = empty_outputs()
    put(outputs, 32, 0, 0, "train", 0.9, (5, 5, 1, 1))  # reaches 144 px past the corner
    [found] = decode(outputs, IDENTITY)
    assert found.box == pytest.approx((0.0, 0.0, 48.0, 48.0))


# --------------------------------------------------------------- back to the image's pixels


def test_stretched_boxes_map_back_to_a_non_square_image():
    image = np.zeros((208, 832, 3), np.uint8)  # 4:1, so x and y scale differently
    _, placement = preprocess(image)
    assert (placement.scale_x, placement.scale_y) == (0.5, 2.0)
    outputs = empty_outputs()
    put(outputs, 16, 7, 5, "car", 0.9, (2, 3, 4, 1))  # (88, 40, 184, 104) in the input
    [found] = decode(outputs, placement)
    assert found.box == pytest.approx((176.0, 20.0, 368.0, 52.0), abs=1e-4)


def test_letterboxed_boxes_map_back_without_the_bars():
    image = np.zeros((416, 832, 3), np.uint8)
    tensor, placement = preprocess(image, letterbox=True)
    assert (placement.scale_x, placement.scale_y, placement.pad_x, placement.pad_y) == (
        0.5,
        0.5,
        0,
        104,
    )
    # The bars are black before normalisation, the image area too here: check the rows.
    assert np.allclose(tensor[0, :, :104], (-MEAN / STD)[:, None, None])
    box = np.array([[0.0, 104.0, 416.0, 312.0], [100.0, 150.0, 200.0, 250.0]])
    assert placement.to_image(box) == pytest.approx(
        np.array([[0, 0, 832, 416], [200, 92, 400, 292]], np.float32)
    )


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_normalises_bgr_channels_in_nchw():
    image = np.empty((3, 5, 3), np.uint8)
    image[:] = (10, 120, 250)  # B, G, R
    tensor, placement = preprocess(image)
    assert tensor.shape == (1, 3, INPUT_SIZE, INPUT_SIZE) and tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    expected = (np.array([10, 120, 250], np.float32) - MEAN) / STD
    for channel in range(3):
        assert np.allclose(tensor[0, channel], expected[channel], atol=1e-6)
    assert (placement.width, placement.height) == (5, 3)


def test_preprocess_keeps_the_layout_of_the_image():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:50, :100] = 255  # top-left quarter white
    tensor, _ = preprocess(image)
    white = (255 - MEAN[0]) / STD[0]
    assert tensor[0, 0, 10, 10] == pytest.approx(white, abs=1e-5)
    assert tensor[0, 0, 400, 400] == pytest.approx(-MEAN[0] / STD[0], abs=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_preprocess_refuses_what_is_not_a_bgr_image(bad):
    with pytest.raises(ValueError, match="image"):
        preprocess(bad)


def test_batches_keep_their_order():
    images = [np.full((20 + n, 30, 3), 40 * n, np.uint8) for n in range(3)]
    batch, placements = preprocess_batch(images)
    assert batch.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    assert [p.height for p in placements] == [20, 21, 22]
    for n, image in enumerate(images):
        assert np.array_equal(batch[n : n + 1], preprocess(image)[0])
    with pytest.raises(ValueError, match="no images"):
        preprocess_batch([])


def test_decode_batch_decodes_each_image_with_its_own_placement():
    first, second = empty_outputs(), empty_outputs()
    put(first, 8, 4, 4, "person", 0.9, (1, 1, 1, 1))
    put(second, 32, 2, 2, "bicycle", 0.8, (1, 1, 1, 1))
    batched = {name: np.stack([first[name], second[name]]) for name in first}
    half = Placement(208, 208, 2.0, 2.0)
    found = decode_batch(batched, [IDENTITY, half])
    assert found == [decode(first, IDENTITY), decode(second, half)]
    assert [d.class_name for d in found[1]] == ["bicycle"]
    assert isinstance(found[0][0], Detection)
    with pytest.raises(ValueError, match="expected 3 images"):
        decode_batch(batched, [IDENTITY, half, half])
    with pytest.raises(ValueError, match="lack"):
        decode_batch({"scores_8": batched["scores_8"]}, [IDENTITY, half])


def test_wrong_grid_shapes_are_refused():
    outputs = empty_outputs()
    outputs[nanodet.bins_output(8)] = outputs[nanodet.bins_output(8)][:, :40]
    with pytest.raises(ValueError, match="stride 8"):
        decode(outputs, IDENTITY)


def test_the_classes_are_coco_80():
    assert len(COCO_CLASSES) == 80 == len(set(COCO_CLASSES))
    for index, name in ((0, "person"), (1, "bicycle"), (2, "car"), (3, "motorcycle")):
        assert COCO_CLASSES[index] == name
    for index, name in ((5, "bus"), (6, "train"), (7, "truck"), (79, "toothbrush")):
        assert COCO_CLASSES[index] == name
