"""PP-OCR (text detection and recognition) before and after the models, and what the
recognised text means for city management: illegal small ads (B01), unapproved banners
(B02).

Pure numpy + cv2, no runtime: ``models.vision.ocr_runner`` feeds these tensors to
onnxruntime or Triton and hands the outputs back. The steps follow RapidOCR 3.10's
pipeline (the PP-OCR reference implementation the models ship with; our integration
test compares the two on real photos), without its shapely/pyclipper dependencies:

1. ``prepare``: the image within ``max_side_len`` (and at least ``min_side_len``), a
   strip padded above and below (a very wide banner photo), then the detector's input:
   resized so its short side reaches ``limit_side_len``, both sides multiples of 32
   (the detector halves the image five times), ``(x / 255 - 0.5) / 0.5`` per BGR channel,
   ``image`` FP32 [1, 3, H, W].
2. ``db_boxes``: the detector's map of text probability [H, W] → binarised at
   ``thresh``, each blob's minimum-area rectangle kept when its mean probability reaches
   ``box_thresh``, then grown by DB's "unclip" distance (the detector is trained on shrunk
   text regions) and scaled to the prepared image; ``sort_boxes`` puts them in reading
   order.
3. ``crop_line``: each quadrilateral warped upright into its own image (tall ones turned
   90°: vertical text).
4. ``rec_batch``: crops resized to height 48, padded on the right to a common width of at
   least 320, same normalisation, ``image`` FP32 [N, 3, 48, W].
5. ``ctc_decode``: the recogniser's per-step character probabilities [N, W/8, C] → the
   best character per step, repeats merged, blanks (index 0) dropped; the score is the
   mean probability of the characters kept.

Boxes (``OcrLine.box``) are four (x, y) points in the original image's pixels, clockwise
from the top-left corner of the text as read: a rectangle is not enough, signs are
photographed at an angle.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

Point = tuple[float, float]
Quad = tuple[Point, Point, Point, Point]

DET_MULTIPLE = 32
REC_HEIGHT = 48
CTC_BLANK = "blank"  # index 0 of the recogniser's classes; never part of a text
# DB's dilation of the binary map: joins characters a one-pixel gap apart.
_DILATION_KERNEL = np.ones((2, 2), np.uint8)
# Boxes whose top-left corners are less than this many pixels apart vertically are one
# row, read left to right (RapidOCR's rule).
_SAME_ROW_PX = 10


@dataclass(frozen=True)
class OcrOptions:
    """RapidOCR 3.10's defaults for PP-OCRv6 (its ``config.yaml``)."""

    min_side_len: int = 30
    max_side_len: int = 2000
    # A strip wider than 8:1 (or lower than 30 px) is padded with black above and below:
    # the detector was trained on scenes, not on cut-out text lines.
    width_height_ratio: float = 8.0
    min_height: int = 30
    limit_side_len: int = 736
    limit_type: str = "min"  # "min": short side up to the limit; "max": long side down
    thresh: float = 0.3
    box_thresh: float = 0.5
    max_candidates: int = 1000
    unclip_ratio: float = 1.6
    use_dilation: bool = True
    min_box_side: float = 3.0
    rec_min_width: int = 320
    text_score: float = 0.5

    def __post_init__(self) -> None:
        if self.limit_type not in ("min", "max"):
            raise ValueError(f"limit_type must be 'min' or 'max', got {self.limit_type!r}")
        if not (0 < self.thresh < 1 and 0 <= self.box_thresh <= 1 and self.unclip_ratio > 0):
            raise ValueError("need 0 < thresh < 1, 0 <= box_thresh <= 1, unclip_ratio > 0")
        if self.min_side_len < 1 or self.max_side_len < self.min_side_len:
            raise ValueError("need 1 <= min_side_len <= max_side_len")


@dataclass(frozen=True)
class OcrLine:
    """One line of text: what it says, where (four points, see the module doc), and the
    recogniser's confidence (mean character probability, 0..1)."""

    text: str
    box: Quad
    score: float

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "box": [[round(x, 1), round(y, 1)] for x, y in self.box],
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class Prepared:
    """One image made ready for detection, and how to map boxes back to the original."""

    image: np.ndarray  # BGR uint8: what the boxes are found in and crops cut from
    det_input: np.ndarray  # FP32 [1, 3, H, W]
    pad_top: int
    ratio_h: float  # original pixels per prepared pixel
    ratio_w: float
    original_size: tuple[int, int]  # (height, width)


# ------------------------------------------------------------------------- preparation


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A 3-channel BGR uint8 image from grey, BGR or BGRA."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"expected a grey, BGR or BGRA image, got shape {image.shape}")


def _resize_to_multiple(image: np.ndarray, ratio: float) -> np.ndarray:
    h, w = image.shape[:2]
    new_h = round(int(h * ratio) / DET_MULTIPLE) * DET_MULTIPLE
    new_w = round(int(w * ratio) / DET_MULTIPLE) * DET_MULTIPLE
    if new_h <= 0 or new_w <= 0:
        raise ValueError(f"image of {w}x{h} is too small to read")
    return cv2.resize(image, (new_w, new_h))


def fit_within(image: np.ndarray, min_side: int, max_side: int) -> tuple[np.ndarray, float, float]:
    """The image with its long side at most ``max_side`` and short side at least
    ``min_side`` (multiples of 32 when resized); original pixels per new pixel (h, w)."""
    h, w = image.shape[:2]
    ratio_h = ratio_w = 1.0
    if max(h, w) > max_side:
        image = _resize_to_multiple(image, max_side / max(h, w))
        ratio_h, ratio_w = h / image.shape[0], w / image.shape[1]
    if min(image.shape[:2]) < min_side:
        image = _resize_to_multiple(image, min_side / min(image.shape[:2]))
        ratio_h, ratio_w = h / image.shape[0], w / image.shape[1]
    return image, ratio_h, ratio_w


def pad_strip(
    image: np.ndarray, width_height_ratio: float, min_height: int
) -> tuple[np.ndarray, int]:
    """A very wide or very low image padded with black above and below; the top padding."""
    h, w = image.shape[:2]
    if h > min_height and w / h <= width_height_ratio:
        return image, 0
    pad = int(abs(max(int(w / width_height_ratio), min_height) * 2 - h) / 2)
    return cv2.copyMakeBorder(image, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)), pad


def normalise(image: np.ndarray) -> np.ndarray:
    """BGR uint8 [H, W, 3] → FP32 [3, H, W], (x / 255 - 0.5) / 0.5 as PP-OCR was trained."""
    return ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def det_resize(image: np.ndarray, limit_side_len: int, limit_type: str) -> np.ndarray:
    """Resize for the detector: both sides multiples of 32 (its five halvings), the short
    side raised to the limit ("min") or the long side lowered to it ("max")."""
    h, w = image.shape[:2]
    if limit_type == "max":
        ratio = limit_side_len / max(h, w) if max(h, w) > limit_side_len else 1.0
    else:
        ratio = limit_side_len / min(h, w) if min(h, w) < limit_side_len else 1.0
    return _resize_to_multiple(image, ratio)


def prepare(image: np.ndarray, options: OcrOptions = OcrOptions()) -> Prepared:
    """Step 1 of the module doc."""
    original = as_bgr(image)
    fitted, ratio_h, ratio_w = fit_within(original, options.min_side_len, options.max_side_len)
    padded, pad_top = pad_strip(fitted, options.width_height_ratio, options.min_height)
    resized = det_resize(padded, options.limit_side_len, options.limit_type)
    return Prepared(
        image=padded,
        det_input=normalise(resized)[np.newaxis],
        pad_top=pad_top,
        ratio_h=ratio_h,
        ratio_w=ratio_w,
        original_size=(original.shape[0], original.shape[1]),
    )


# ------------------------------------------------------------------- DB post-processing


def _mini_box(rect: tuple[tuple[float, float], tuple[float, float], float]) -> np.ndarray:
    """The rectangle's corners, top-left first, clockwise."""
    return order_clockwise(cv2.boxPoints(rect))


def box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the quadrilateral (DB's "fast" score)."""
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = (box - np.array([xmin, ymin], dtype=np.float32)).astype(np.int32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _clipper_round(values: np.ndarray) -> np.ndarray:
    """Clipper's rounding: halves away from zero."""
    return np.where(values < 0, np.ceil(values - 0.5), np.floor(values + 0.5))


def unclip(box: np.ndarray, ratio: float) -> tuple[tuple[float, float], tuple[float, float], float]:
    """DB's unclip: the box grown by area * ratio / perimeter on every side (the detector
    is trained on shrunk text regions); the grown shape's minimum-area rectangle.

    PP-OCR offsets the polygon with pyclipper (integer coordinates: it truncates the
    corners), rounded joins. For a convex quadrilateral the rounded corners lie inside
    the rectangle that the offset edges span, so the edges' end points, offset along
    their outward normals and rounded as Clipper rounds, give the same rectangle without
    a polygon clipping library."""
    box = box.astype(np.float32)
    distance = cv2.contourArea(box) * ratio / cv2.arcLength(box.reshape(-1, 1, 2), True)
    corners = np.trunc(box).astype(np.float64)
    centre = corners.mean(axis=0)
    points = []
    for start, end in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        edge = end - start
        length = float(np.hypot(*edge))
        if length == 0:
            continue
        normal = np.array([edge[1], -edge[0]]) / length
        if np.dot(normal, (start + end) / 2 - centre) < 0:
            normal = -normal  # outward
        points += [start + normal * distance, end + normal * distance]
    grown = _clipper_round(np.array(points)).astype(np.float32)
    return cv2.minAreaRect(grown.reshape(-1, 1, 2))


def order_clockwise(points: np.ndarray) -> np.ndarray:
    """Four points as top-left, top-right, bottom-right, bottom-left: the two leftmost
    (stable sort by x) split by y, then the two rightmost, as PP-OCR orders them."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def db_boxes(
    prob: np.ndarray, dest_size: tuple[int, int], options: OcrOptions = OcrOptions()
) -> list[tuple[np.ndarray, float]]:
    """Step 2: text quadrilaterals [4, 2] in an image of ``dest_size`` (height, width) and
    their scores, from the detector's probability map [H, W] (any resolution)."""
    if prob.ndim != 2:
        raise ValueError(f"expected a probability map [H, W], got shape {prob.shape}")
    height, width = prob.shape
    dest_h, dest_w = dest_size
    bitmap = (prob > options.thresh).astype(np.uint8)
    if options.use_dilation:
        bitmap = cv2.dilate(bitmap, _DILATION_KERNEL)
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[np.ndarray, float]] = []
    for contour in contours[: options.max_candidates]:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < options.min_box_side:
            continue
        mini = _mini_box(rect)
        score = box_score(prob, mini)
        if score < options.box_thresh:
            continue
        grown = unclip(mini, options.unclip_ratio)
        if min(grown[1]) < options.min_box_side + 2:
            continue
        box = _mini_box(grown)
        box[:, 0] = np.clip(np.round(box[:, 0] / width * dest_w), 0, dest_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / height * dest_h), 0, dest_h)
        # Inside the image, corners in order, at least 4 px each way.
        box = order_clockwise(box.astype(np.int32).astype(np.float32))
        box[:, 0] = np.clip(box[:, 0], 0, dest_w - 1).astype(np.int32)
        box[:, 1] = np.clip(box[:, 1], 0, dest_h - 1).astype(np.int32)
        if int(np.linalg.norm(box[0] - box[1])) <= 3 or int(np.linalg.norm(box[0] - box[3])) <= 3:
            continue
        found.append((box, score))
    return found


def sort_boxes(found: Sequence[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float]]:
    """Reading order: rows top to bottom (top-left corners within 10 px are one row),
    left to right within a row."""
    if not found:
        return []
    tops = np.array([box[0, 1] for box, _ in found])
    by_y = np.argsort(tops, kind="stable")
    rows = np.concatenate([[0], np.cumsum(np.diff(tops[by_y]) >= _SAME_ROW_PX)])
    lefts = np.array([found[i][0][0, 0] for i in by_y])
    return [found[by_y[i]] for i in np.lexsort((lefts, rows))]


def crop_line(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Step 3: the quadrilateral warped upright; turned 90° when 1.5 times taller than wide
    (vertical text, read top to bottom)."""
    box = box.astype(np.float32)
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    if width < 1 or height < 1:
        raise ValueError(f"degenerate text box {box.tolist()}")
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    crop = cv2.warpPerspective(
        image,
        cv2.getPerspectiveTransform(box, target),
        (width, height),
        borderMode=cv2.BORDER_REPLICATE,
        flags=cv2.INTER_CUBIC,
    )
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return crop


def to_original(box: np.ndarray, prepared: Prepared) -> Quad:
    """A box in the prepared image mapped to the original image's pixels."""
    h, w = prepared.original_size
    xs = np.clip(box[:, 0] * prepared.ratio_w, 0, w)
    ys = np.clip((box[:, 1] - prepared.pad_top) * prepared.ratio_h, 0, h)
    p = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    return (p[0], p[1], p[2], p[3])


# ---------------------------------------------------------------------- recognition


def rec_width(crops: Sequence[np.ndarray], min_width: int = 320) -> int:
    """The padded width of a recognition batch: the widest crop at height 48, at least
    ``min_width`` (PP-OCR's 320: shorter lines are padded rather than stretched)."""
    ratio = max([min_width / REC_HEIGHT] + [c.shape[1] / c.shape[0] for c in crops])
    return int(REC_HEIGHT * ratio)


def rec_batch(crops: Sequence[np.ndarray], min_width: int = 320) -> np.ndarray:
    """Step 4: FP32 [N, 3, 48, W], each crop at height 48 keeping its aspect (never wider
    than W), zeros (mid-grey after normalisation) to the right."""
    if not crops:
        raise ValueError("no crops to recognise")
    width = rec_width(crops, min_width)
    batch = np.zeros((len(crops), 3, REC_HEIGHT, width), dtype=np.float32)
    for n, crop in enumerate(crops):
        h, w = crop.shape[:2]
        resized_w = min(width, math.ceil(REC_HEIGHT * w / h))
        batch[n, :, :, :resized_w] = normalise(cv2.resize(crop, (resized_w, REC_HEIGHT)))
    return batch


def read_dictionary(path: Path) -> tuple[str, ...]:
    """The recogniser's classes: the blank, the characters of ``path`` (one a line, as
    extracted from the model), then the space PP-OCR appends."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"no OCR dictionary at {path}: run `python -m models.vision.ocr_models`"
        ) from exc
    return make_dictionary(text.split("\n"))


def make_dictionary(characters: Iterable[str]) -> tuple[str, ...]:
    chars = [c for c in characters if c]
    return (CTC_BLANK, *chars, " ")


def ctc_decode(probs: np.ndarray, dictionary: Sequence[str]) -> list[tuple[str, float]]:
    """Step 5: greedy CTC over [N, T, C] probabilities; (text, mean probability of the
    characters kept, 0 when none) per row."""
    if probs.ndim != 3 or probs.shape[2] != len(dictionary):
        raise ValueError(
            f"recogniser output {probs.shape} does not fit a dictionary of {len(dictionary)}"
        )
    best = probs.argmax(axis=2)
    confidence = probs.max(axis=2)
    keep = best != 0  # the blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]  # a repeat is one character until a blank
    results = []
    for row, mask, conf in zip(best, keep, confidence, strict=True):
        text = "".join(dictionary[i] for i in row[mask])
        results.append((text, float(conf[mask].mean()) if mask.any() else 0.0))
    return results


# ---------------------------------------------------------------- what the text means
#
# A transparent weighted lexicon rather than a model: every decision names the words and
# numbers behind it (``evidence``), and a term that misfires is one line to change.
# Text is NFKC-normalised first (full-width digits and letters as ASCII).


class Term(NamedTuple):
    pattern: re.Pattern[str]
    weight: float
    label: str


def _term(pattern: str, weight: float, label: str | None = None) -> Term:
    return Term(re.compile(pattern), weight, label or pattern)


# Small ads (B01): the fly-posted "办证 139xxxxxxxx" slips on poles and walls.
SMALL_AD_THRESHOLD = 3.0
# A phone number is how a small ad is answered, but shop signs carry one too: alone it
# is not enough (2 < 3); with any ad wording it is (2 + 1).
PHONE_WEIGHT = 2.0
SMALL_AD_TERMS: tuple[Term, ...] = (
    # Strong (3): services only illegal posters advertise; enough without a number.
    # 办证 (forged certificates), but not a service hall's "办证大厅/中心/窗口".
    _term(r"办证(?!大厅|中心|窗口|处|指南|须知)", 3.0, "办证"),
    _term(r"办(?:理)?(?:各类|各种)?(?:证件|文凭|学历|驾照)", 3.0, "办证件"),
    _term(r"刻章", 3.0),
    _term(r"代开(?:各类|各种)?(?:正规)?发票|发票代开|开(?:各类|正规)?发票", 3.0, "代开发票"),
    _term(r"套现", 3.0),
    _term(r"无抵押", 3.0),
    _term(r"私家侦探", 3.0),
    # Ordinary (1): real businesses say these too; they count with a phone number.
    _term(r"贷款", 1.0),
    _term(r"开锁", 1.0),
    _term(r"(?:管道|下水道?)?疏通|通下水道?", 1.0, "疏通"),
    _term(r"招聘(?!会)", 1.0, "招聘"),  # 招聘会: a job fair's banner, not an ad slip
    _term(r"租房|出租|求租", 1.0, "租房"),
    _term(r"代办", 1.0),
    _term(r"搬家", 1.0),
    _term(r"回收", 1.0),
    _term(r"家政|保洁|月嫂", 1.0, "家政"),
    _term(r"高薪|日结", 1.0, "高薪"),
)

# Unapproved banners (B02): slogans and promotions on a long horizontal line.
BANNER_THRESHOLD = 2.0
BANNER_TERMS: tuple[Term, ...] = (
    # Strong (2): the words of celebration and promotion banners; on a long line, enough.
    _term(r"热烈(?:庆祝|祝贺|欢迎)", 2.0, "热烈庆祝"),
    _term(r"庆祝|祝贺|喜迎", 2.0, "庆祝"),
    _term(r"开业", 2.0),
    _term(r"酬宾", 2.0),
    _term(r"招商(?!银行|局|证券)", 2.0, "招商"),  # 招商银行 is a bank's name, on its sign
    _term(r"清仓|甩卖|大促", 2.0, "清仓"),
    _term(r"全场.{0,3}(?:[1-9一二三四五六七八九](?:\.\d)?折|特价)", 2.0, "全场打折"),
    _term(r"横幅", 2.0),
    # Ordinary (1): shop signs and notices say these too; they count in pairs.
    _term(r"优惠|特价|钜惠|让利|促销|折扣", 1.0, "优惠"),
    _term(r"招生|报名", 1.0, "招生"),
    _term(r"欢迎", 1.0),  # "欢迎光临" on a shop's door is not a banner
    _term(r"周年|庆典", 1.0, "周年"),
)
# A banner line: at least this wide for its height, and this many characters (a shop
# name "超市" on a wide sign is not a slogan).
BANNER_MIN_ASPECT = 5.0
BANNER_MIN_CHARS = 6
BANNER_MAX_TILT_DEG = 20.0

_DIGIT_SEPARATORS = re.compile(r"(?<=\d)[ \-\u2010-\u2015\u00b7\u2022.·•]+(?=\d)")
# Mainland mobile numbers: 1, then 3-9, nine more digits; not inside a longer digit run
# (an ID card or an order number), hence the look-arounds.
_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
# Landlines: area code 010, 02x or 0[3-9]xx, then a 7-8 digit local number starting 2-8
# (local numbers never start 0 or 1), and the 400/800 service numbers ads also use.
_LANDLINE = re.compile(r"(?<!\d)(?:0(?:10|2\d|[3-9]\d\d)[2-8]\d{6,7}|[48]00\d{7})(?!\d)")


class TextVerdict(NamedTuple):
    """What the text on one image is: ``evidence`` names the numbers and terms found."""

    small_ad: bool
    banner: bool
    evidence: tuple[str, ...]


def normalise_text(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def phone_numbers(text: str) -> list[str]:
    """Mobile and landline numbers in ``text``, separators between digits ignored ("139
    1234 5678", "0532-8888 6666"); dates, house numbers and longer digit runs are not."""
    digits = _DIGIT_SEPARATORS.sub("", normalise_text(text))
    return _MOBILE.findall(digits) + _LANDLINE.findall(digits)


def masked(number: str) -> str:
    """A phone number for the evidence: its middle hidden, as everywhere we show one."""
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def matched_terms(text: str, terms: Sequence[Term]) -> list[Term]:
    """Each term found in ``text`` once (repeating a word does not add weight)."""
    return [term for term in terms if term.pattern.search(text)]


def _line_geometry(box: Quad) -> tuple[float, float]:
    """(width / height, tilt in degrees) of a text quadrilateral."""
    (x0, y0), (x1, y1), _, (x3, y3) = box
    width = math.hypot(x1 - x0, y1 - y0)
    height = max(math.hypot(x3 - x0, y3 - y0), 1e-6)
    tilt = abs(math.degrees(math.atan2(y1 - y0, x1 - x0)))
    return width / height, min(tilt, 180.0 - tilt)


def is_banner_line(line: OcrLine) -> bool:
    """Long and horizontal: a banner's shape."""
    aspect, tilt = _line_geometry(line.box)
    chars = len(re.sub(r"\s", "", line.text))
    return aspect >= BANNER_MIN_ASPECT and chars >= BANNER_MIN_CHARS and tilt <= BANNER_MAX_TILT_DEG


def classify_text(lines: Sequence[OcrLine]) -> TextVerdict:
    """Small ad and banner from the lines read on one image.

    * small ad: phone numbers (any line) weigh ``PHONE_WEIGHT``, ad wording (all lines
      together) the weights of ``SMALL_AD_TERMS``; a total of ``SMALL_AD_THRESHOLD``
      makes a small ad (a number and one ad word, or one strong word alone);
    * banner: one line that is long and horizontal (``is_banner_line``) whose own
      wording weighs ``BANNER_THRESHOLD`` (one set phrase, or two promotional words).
    """
    texts = [normalise_text(line.text) for line in lines]
    evidence: list[str] = []
    numbers = sorted({n for text in texts for n in phone_numbers(text)})
    evidence += [f"phone {masked(n)}" for n in numbers]
    # Joined without a separator: a word split over two detected boxes still matches.
    ad_terms = matched_terms("".join(texts), SMALL_AD_TERMS)
    evidence += [f"ad word {t.label} ({t.weight:g})" for t in ad_terms]
    ad_weight = (PHONE_WEIGHT if numbers else 0.0) + sum(t.weight for t in ad_terms)
    small_ad = ad_weight >= SMALL_AD_THRESHOLD
    banner = False
    for line, text in zip(lines, texts, strict=True):
        terms = matched_terms(text, BANNER_TERMS)
        weight = sum(t.weight for t in terms)
        if terms and is_banner_line(line):
            evidence += [f"banner line {text!r}: {', '.join(t.label for t in terms)}"]
            banner = banner or weight >= BANNER_THRESHOLD
    return TextVerdict(small_ad, banner, tuple(evidence))
