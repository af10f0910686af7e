"""Average precision of a detector against labelled boxes (pure numpy).

AP at one IoU threshold, as PASCAL VOC since 2010 computes it: detections of a class over
all images, highest score first, each matched to the unmatched ground-truth box of its
image it overlaps most (a true positive when that IoU reaches the threshold, else a false
positive; a second detection of a matched box is a false positive); AP is the area under
the precision-recall curve after making precision non-increasing (all points, no
11-point sampling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.vision.assign import box_iou


@dataclass(frozen=True)
class Scored:
    """One detection of the class being scored: its image, score and box (x1, y1, x2, y2)."""

    image: int
    score: float
    box: tuple[float, float, float, float]


def average_precision(
    detections: Sequence[Scored],
    truth: Mapping[int, np.ndarray],
    iou_threshold: float = 0.5,
) -> float:
    """AP of ``detections`` against ``truth`` (image → boxes [K, 4]); NaN when there is no
    ground-truth box at all (AP is undefined, not 0)."""
    total = sum(len(np.asarray(boxes).reshape(-1, 4)) for boxes in truth.values())
    if total == 0:
        return float("nan")
    order = sorted(range(len(detections)), key=lambda i: (-detections[i].score, i))
    matched = {
        image: np.zeros(len(np.asarray(b).reshape(-1, 4)), bool) for image, b in truth.items()
    }
    hits = np.zeros(len(order), bool)
    for rank, i in enumerate(order):
        det = detections[i]
        boxes = np.asarray(truth.get(det.image, np.zeros((0, 4))), np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        overlaps = box_iou(np.asarray([det.box], np.float64), boxes)[0]
        # Only unmatched boxes can be claimed: the best free one, if it overlaps enough.
        overlaps = np.where(matched[det.image], -1.0, overlaps)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            matched[det.image][best] = True
            hits[rank] = True
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / total
    precision = tp / np.maximum(tp + fp, 1)
    # The envelope: precision at recall r is the best precision at any recall ≥ r.
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def per_class_ap(
    detections: Sequence[Sequence[tuple[str, float, tuple[float, float, float, float]]]],
    truth: Sequence[Sequence[tuple[str, tuple[float, float, float, float]]]],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """AP per class over a set of images: ``detections[i]`` and ``truth[i]`` are image i's
    (class, score, box) and (class, box)."""
    if len(detections) != len(truth):
        raise ValueError(f"{len(detections)} images of detections, {len(truth)} of labels")
    result = {}
    for name in classes:
        scored = [
            Scored(i, score, box)
            for i, per_image in enumerate(detections)
            for label, score, box in per_image
            if label == name
        ]
        boxes = {
            i: np.asarray([box for label, box in per_image if label == name], np.float64).reshape(
                -1, 4
            )
            for i, per_image in enumerate(truth)
        }
        result[name] = average_precision(scored, boxes, iou_threshold)
    return result
