"""models.vision.metrics: AP@IoU on cases whose answer is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.vision.metrics import Scored, average_precision, per_class_ap

A = (0.0, 0.0, 10.0, 10.0)
B = (20.0, 20.0, 30.0, 30.0)
FAR = (100.0, 100.0, 110.0, 110.0)


def truth(*boxes: tuple[float, ...], image: int = 0) -> dict[int, np.ndarray]:
    return {image: np.array(boxes, np.float64).reshape(-1, 4)}


def test_perfect_detections_give_one() -> None:
    dets = [Scored(0, 0.9, A), Scored(0, 0.8, B)]
    assert average_precision(dets, truth(A, B)) == pytest.approx(1.0)


def test_no_detection_gives_zero_and_no_truth_gives_nan() -> None:
    assert average_precision([], truth(A)) == 0.0
    assert math.isnan(average_precision([Scored(0, 0.9, A)], {0: np.zeros((0, 4))}))


def test_a_false_positive_ranked_between_two_hits() -> None:
    # Ranks: hit (P 1, R .5), miss (P .5, R .5), hit (P 2/3, R 1): the envelope gives
    # .5 × 1 + .5 × 2/3.
    dets = [Scored(0, 0.9, A), Scored(0, 0.8, FAR), Scored(0, 0.7, B)]
    assert average_precision(dets, truth(A, B)) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_false_positive_ranked_last_costs_nothing() -> None:
    dets = [Scored(0, 0.9, A), Scored(0, 0.8, B), Scored(0, 0.1, FAR)]
    assert average_precision(dets, truth(A, B)) == pytest.approx(1.0)


def test_a_second_detection_of_the_same_box_is_a_false_positive() -> None:
    # Hit (P 1, R .5), duplicate (P .5), then B found (P 2/3, R 1).
    dets = [Scored(0, 0.9, A), Scored(0, 0.85, A), Scored(0, 0.8, B)]
    assert average_precision(dets, truth(A, B)) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_iou_threshold_decides_a_hit() -> None:
    shifted = (0.0, 0.0, 10.0, 20.0)  # IoU with A: 100 / 200 = 0.5
    assert average_precision([Scored(0, 0.9, shifted)], truth(A), 0.5) == pytest.approx(1.0)
    assert average_precision([Scored(0, 0.9, shifted)], truth(A), 0.51) == 0.0


def test_boxes_of_other_images_do_not_match() -> None:
    gts = {0: np.array([A]), 1: np.array([A])}
    dets = [Scored(1, 0.9, A)]  # image 0's box is never found
    assert average_precision(dets, gts) == pytest.approx(0.5)


def test_a_detection_takes_the_best_free_box() -> None:
    # Two overlapping truths; the first detection overlaps both, best with the second.
    left, right = (0.0, 0.0, 10.0, 10.0), (4.0, 0.0, 14.0, 10.0)
    dets = [Scored(0, 0.9, (3.0, 0.0, 13.0, 10.0)), Scored(0, 0.8, left)]
    assert average_precision(dets, truth(left, right)) == pytest.approx(1.0)


def test_per_class_ap_scores_each_class_apart() -> None:
    detections = [[("cat", 0.9, A), ("dog", 0.8, A)], [("dog", 0.7, B)]]
    labels = [[("cat", A)], [("dog", B)]]
    result = per_class_ap(detections, labels, ["cat", "dog", "cow"])
    assert result["cat"] == pytest.approx(1.0)
    # dog: the 0.8 detection in image 0 is a false positive ranked first.
    assert result["dog"] == pytest.approx(0.5)
    assert math.isnan(result["cow"])
    with pytest.raises(ValueError, match="images"):
        per_class_ap(detections, labels[:1], ["cat"])
