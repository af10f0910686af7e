"""Label assignment for fine-tuning NanoDet: which grid cells learn which box. Pure numpy,
imported both by the training code (``models.vision.finetune``, in the torch venv) and by
the main venv's tests.

ATSS-lite, as NanoDet's GFL head is trained: each cell carries an anchor box, a square of
``ANCHOR_SCALE`` strides centred on it; for every ground-truth box the ``TOP_K`` cells of
each level nearest its centre are candidates, and those whose anchor overlaps the box by at
least the candidates' mean + standard deviation of IoU, with the cell centre inside the
box, become its positives. A cell claimed by several boxes goes to the one it overlaps
most. The threshold adapts per box: a large box finds its positives on the coarse
levels, a small one on the fine levels, without size ranges to tune.
"""

from __future__ import annotations

import numpy as np

# The same values as models.vision.nanodet (which imports cv2, absent from the torch venv).
INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11
TOP_K = 9
ANCHOR_SCALE = 5.0  # NanoDet/GFL's octave_base_scale: anchors of 5 strides a side
BACKGROUND = -1


def grid(
    input_size: int = INPUT_SIZE, strides: tuple[int, ...] = STRIDES
) -> tuple[np.ndarray, np.ndarray, list[slice]]:
    """All cells of all levels, in the model's output order: centres [A, 2] (x, y) in input
    pixels, strides [A], and each level's slice of the cells."""
    centres, cell_strides, slices = [], [], []
    start = 0
    for stride in strides:
        side = input_size // stride
        ys, xs = np.divmod(np.arange(side * side), side)
        centres.append((np.stack([xs, ys], axis=1) + 0.5) * stride)
        cell_strides.append(np.full(side * side, stride, np.float64))
        slices.append(slice(start, start + side * side))
        start += side * side
    return np.concatenate(centres), np.concatenate(cell_strides), slices


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [len(a), len(b)] of boxes (x1, y1, x2, y2)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def atss_assign(
    gt_boxes: np.ndarray,
    centres: np.ndarray,
    cell_strides: np.ndarray,
    level_slices: list[slice],
    top_k: int = TOP_K,
) -> np.ndarray:
    """The ground-truth index each cell learns (``BACKGROUND`` for none), [A] int64."""
    cells = len(centres)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    assigned = np.full(cells, BACKGROUND, np.int64)
    if not len(gt_boxes):
        return assigned
    if np.any(gt_boxes[:, 2] <= gt_boxes[:, 0]) or np.any(gt_boxes[:, 3] <= gt_boxes[:, 1]):
        raise ValueError(f"boxes must have x2 > x1 and y2 > y1: {gt_boxes.tolist()}")
    half = ANCHOR_SCALE * cell_strides / 2
    anchors = np.concatenate([centres - half[:, None], centres + half[:, None]], axis=1)
    ious = box_iou(anchors, gt_boxes)  # [A, G]
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    dist = np.linalg.norm(centres[:, None, :] - gt_centres[None, :, :], axis=2)  # [A, G]
    candidates = []
    for level in level_slices:
        k = min(top_k, level.stop - level.start)
        # Stable sort: equal distances (a centre between cells) break ties by cell order.
        nearest = np.argsort(dist[level], axis=0, kind="stable")[:k]
        candidates.append(nearest + level.start)
    candidate_idx = np.concatenate(candidates)  # [K, G]
    columns = np.arange(len(gt_boxes))
    candidate_iou = ious[candidate_idx, columns]
    threshold = candidate_iou.mean(axis=0) + candidate_iou.std(axis=0)
    cx, cy = centres[candidate_idx, 0], centres[candidate_idx, 1]
    inside = (
        (cx > gt_boxes[:, 0] + 0.01) & (cx < gt_boxes[:, 2] - 0.01)
        & (cy > gt_boxes[:, 1] + 0.01) & (cy < gt_boxes[:, 3] - 0.01)
    )  # fmt: skip
    positive = (candidate_iou >= threshold) & inside
    overlap = np.full((cells, len(gt_boxes)), -np.inf)
    rows, cols = candidate_idx[positive], np.broadcast_to(columns, positive.shape)[positive]
    overlap[rows, cols] = ious[rows, cols]
    best = overlap.argmax(axis=1)
    claimed = np.isfinite(overlap[np.arange(cells), best])
    assigned[claimed] = best[claimed]
    return assigned


def distance_targets(
    boxes: np.ndarray, centres: np.ndarray, cell_strides: np.ndarray
) -> np.ndarray:
    """Distances [P, 4] (left, top, right, bottom) from each cell centre to its box's edges,
    in strides, clipped to the bins' range [0, REG_BINS - 1) so the two bins around each
    target exist."""
    d = np.concatenate([centres - boxes[:, :2], boxes[:, 2:] - centres], axis=1)
    return np.clip(d / cell_strides[:, None], 0, REG_BINS - 1 - 1e-3)
