"""Privacy for stored pictures: faces and licence plates obscured before a snapshot exists.

Pure numpy + cv2. ``redact`` takes a frame and what the models found in it and returns a
``RedactedImage``: a copy with every face (padded), every person's head band, and on each
vehicle the plate's likely place obscured. Only ``redact`` makes a ``RedactedImage``, and
the only ways to bytes or a file (``RedactedImage.to_jpeg``, ``snapshot``,
``write_snapshot``) take one, so code that stores pictures cannot hand over the raw frame
by mistake: a numpy array is refused with a TypeError.

    faces = face_detector.detect([frame])[0]               # models.vision.face_detector
    vehicles, persons = vehicles_and_persons(detections)   # NanoDet's, same frame
    jpeg = snapshot(frame, faces, vehicles, text_boxes=ocr_lines, persons=persons,
                    check=lambda image: face_detector.detect([image])[0])

What is obscured:

* faces: the face model's boxes, padded by ``FACE_PAD`` of their size on each side
  (BlazeFace's box runs brow to chin; the pad takes the hair line, ears and jaw);
* heads of ``persons`` (NanoDet's person boxes), the top band of each box: faces the
  face model misses (too small, in profile, turned away) still go;
* plates: there is no plate model. On each vehicle, the OCR lines whose centre lies on it
  are obscured (padded); unless one of them is shaped and placed like a plate, so is a
  lower band of the vehicle's box (``PLATE_BAND``: 45% of a car or motorcycle, 30% of a
  bus or lorry), full width, where front and rear plates sit seen from any side. The
  cost: the lower part of every vehicle (wheels, bumpers, the kerb line a parking case
  may need, people in front of it) is unreadable in the stored picture; and a plate on a
  vehicle the detector missed, or that OCR did not box, is not obscured.

How: each region is averaged down to ``CELLS`` (3) cells on its longer side and shaded
back up bilinearly: what is left of a face is a soft gradient of at most 3×3 colours.
Neither a Gaussian nor a fine mosaic is enough: both keep the low frequencies a face is
recognised by, and networks trained on such pictures re-identify them (McPherson et
al., "Defeating Image Obfuscation with Deep Learning", 2016). Measured on the
photos of tests/integration/test_vision_privacy.py (BlazeFace at 0.1 on the redacted
JPEGs): with 6 cells BlazeFace still saw faces at 0.51-0.61 and Haar cascades fired on
the face grid; with 3 cells and a 40% pad the best score left on a region was 0.24, and
Haar found nothing. Replacing the pixels before encoding leaves no trace of them in the
JPEG (and cv2 writes no EXIF or thumbnail).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from web.assets import write_atomic

Box = tuple[float, float, float, float]

VEHICLE_CLASSES = frozenset({"car", "truck", "bus", "motorcycle"})
PERSON_CLASS = "person"

FACE_PAD = 0.4  # of the box's width/height, each side
TEXT_PAD = 0.2  # OCR boxes hug the characters; a plate's frame and neighbours go too
MIN_PAD = 2  # pixels: tiny boxes still get a margin
# The lower part of a vehicle's box that holds its plate, seen from the front or back:
# on cars and motorcycles up to the boot lid or seat; buses and lorries carry theirs on
# the bumper, and their boxes are tall. A box without a class gets the default.
PLATE_BAND = {"bus": 0.3, "truck": 0.3}
PLATE_BAND_DEFAULT = 0.45
# A plate as OCR boxes it: wider than high (1.5-8: one or two lines), and its centre not in
# the top PLATE_TOP of the vehicle (windscreen stickers and roof signs are not plates).
PLATE_ASPECT = (1.5, 8.0)
PLATE_TOP = 0.3
# The head band of a person's box: a standing person's head is about an eighth of the
# height and half the width; a band of a fifth of the height or half the width (seated or
# cut-off people), whichever is larger.
HEAD_HEIGHT = 0.2
HEAD_WIDTH = 0.5
CELLS = 3  # cells on a region's longer side
JPEG_QUALITY = 85
CHECK_ROUNDS = 3  # ``snapshot``'s checks of its own JPEG by the face detector


@dataclass(frozen=True)
class Region:
    """One obscured rectangle, in whole pixels inside the image: (x1, y1, x2, y2), x2 and
    y2 exclusive; ``kind`` says why (face, head, plate, plate-band)."""

    kind: str
    box: tuple[int, int, int, int]


_TOKEN = object()  # only this module holds it: a RedactedImage made elsewhere is refused


class RedactedImage:
    """A frame with its faces and plates obscured. Made only by ``redact``; its pixels
    are a read-only copy. ``regions`` lists what was obscured."""

    __slots__ = ("_pixels", "regions")

    def __init__(self, pixels: np.ndarray, regions: tuple[Region, ...], token: object) -> None:
        if token is not _TOKEN:
            raise TypeError(
                "a RedactedImage is made only by processors.privacy.redact(image, faces, "
                "vehicles, ...): a raw frame must go through it before it is stored"
            )
        pixels.flags.writeable = False
        self._pixels = pixels
        self.regions = regions

    @property
    def pixels(self) -> np.ndarray:
        """The redacted BGR pixels (read-only)."""
        return self._pixels

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._pixels.shape)

    def to_jpeg(self, quality: int = JPEG_QUALITY) -> bytes:
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {quality}")
        ok, data = cv2.imencode(".jpg", self._pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"cv2 could not encode a {self._pixels.shape} image as JPEG")
        return data.tobytes()

    def __repr__(self) -> str:
        return f"RedactedImage(shape={self.shape}, regions={len(self.regions)})"


# --------------------------------------------------------------------------- geometry


def as_box(item: Any) -> Box:
    """A box (x1, y1, x2, y2), four corner points, or anything with such a ``.box`` (a
    Face, a NanoDet Detection, an OcrLine) → (x1, y1, x2, y2), corners in order."""
    value = getattr(item, "box", item)
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (4, 2):  # a quadrilateral: its bounding rectangle
        xs, ys = array[:, 0], array[:, 1]
        array = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    if array.shape != (4,):
        raise ValueError(f"a box is (x1, y1, x2, y2) or four (x, y) points, got {value!r}")
    if not np.isfinite(array).all():
        # Silently skipping it could leave a face in the picture: refuse.
        raise ValueError(f"box {value!r} is not finite")
    x1, x2 = sorted((float(array[0]), float(array[2])))
    y1, y2 = sorted((float(array[1]), float(array[3])))
    return (x1, y1, x2, y2)


def padded(box: Box, fraction: float) -> Box:
    x1, y1, x2, y2 = box
    pad_x = max(MIN_PAD, fraction * (x2 - x1))
    pad_y = max(MIN_PAD, fraction * (y2 - y1))
    return (x1 - pad_x, y1 - pad_y, x2 + pad_x, y2 + pad_y)


def clip(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Whole pixels covering ``box`` inside a ``width``×``height`` image (outwards:
    floor, ceil), or None when nothing of it is inside."""
    x1 = max(0, math.floor(box[0]))
    y1 = max(0, math.floor(box[1]))
    x2 = min(width, math.ceil(box[2]))
    y2 = min(height, math.ceil(box[3]))
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def head_band(person: Box) -> Box:
    x1, y1, x2, y2 = person
    band = max(HEAD_HEIGHT * (y2 - y1), HEAD_WIDTH * (x2 - x1))
    return (x1, y1, x2, min(y2, y1 + band))


def plate_band(vehicle: Box, class_name: str | None = None) -> Box:
    x1, y1, x2, y2 = vehicle
    band = PLATE_BAND.get(class_name or "", PLATE_BAND_DEFAULT)
    return (x1, y2 - band * (y2 - y1), x2, y2)


def _centre_inside(box: Box, outer: Box) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def is_plate_like(text: Box, vehicle: Box) -> bool:
    """An OCR box shaped like a plate (wider than high) and not in the vehicle's top."""
    width, height = text[2] - text[0], text[3] - text[1]
    if height <= 0 or not PLATE_ASPECT[0] <= width / height <= PLATE_ASPECT[1]:
        return False
    top = vehicle[1] + PLATE_TOP * (vehicle[3] - vehicle[1])
    return (text[1] + text[3]) / 2 >= top


def regions(
    width: int,
    height: int,
    faces: Iterable[Any],
    vehicles: Iterable[Any] = (),
    text_boxes: Iterable[Any] = (),
    persons: Iterable[Any] = (),
) -> list[Region]:
    """What ``redact`` obscures in a ``width``×``height`` image, clipped to it."""
    wanted: list[tuple[str, Box]] = [("face", padded(as_box(f), FACE_PAD)) for f in faces]
    wanted += [("head", head_band(as_box(p))) for p in persons]
    texts = [as_box(t) for t in text_boxes]
    for item in vehicles:
        vehicle = as_box(item)
        on_it = [t for t in texts if _centre_inside(t, vehicle)]
        wanted += [("plate", padded(t, TEXT_PAD)) for t in on_it]
        if not any(is_plate_like(t, vehicle) for t in on_it):
            band = plate_band(vehicle, getattr(item, "class_name", None))
            wanted.append(("plate-band", band))
    found = []
    for kind, box in wanted:
        pixels = clip(box, width, height)
        if pixels is not None:
            found.append(Region(kind, pixels))
    return found


# ---------------------------------------------------------------------------- pixels


def obscure(pixels: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Reduce ``box`` of ``pixels`` (in place) to at most ``CELLS`` cells on its longer
    side, each its mean colour, shaded smoothly from cell to cell."""
    x1, y1, x2, y2 = box
    patch = pixels[y1:y2, x1:x2]
    h, w = patch.shape[:2]
    cell = max(1.0, max(w, h) / CELLS)
    cells_x, cells_y = max(1, round(w / cell)), max(1, round(h / cell))
    # INTER_AREA averages every pixel of a cell; bilinear upscaling then shades between
    # the cells' centres: the smoothing, without a Gaussian's cost on a large region.
    small = cv2.resize(patch, (cells_x, cells_y), interpolation=cv2.INTER_AREA)
    pixels[y1:y2, x1:x2] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _check_image(image: np.ndarray) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("an image must be a numpy uint8 array (BGR, as cv2 reads it)")
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"an image must be H×W×3 BGR, got shape {image.shape}")
    return int(image.shape[1]), int(image.shape[0])


def redact(
    image: np.ndarray,
    faces: Iterable[Any],
    vehicles: Iterable[Any] = (),
    text_boxes: Iterable[Any] = (),
    persons: Iterable[Any] = (),
) -> RedactedImage:
    """A copy of ``image`` with faces, heads and plates obscured (see the module's
    docstring); ``image`` is not changed. Boxes are (x1, y1, x2, y2) in the image's
    pixels, four (x, y) points, or objects with such a ``.box``; parts outside the image
    are ignored, a non-finite box is a ValueError."""
    width, height = _check_image(image)
    found = regions(width, height, faces, vehicles, text_boxes, persons)
    pixels = np.array(image, copy=True, order="C")
    for region in found:
        obscure(pixels, region.box)
    return RedactedImage(pixels, tuple(found), _TOKEN)


def snapshot(
    image: np.ndarray,
    faces: Iterable[Any],
    vehicles: Iterable[Any] = (),
    text_boxes: Iterable[Any] = (),
    persons: Iterable[Any] = (),
    *,
    check: Callable[[np.ndarray], Sequence[Any]] | None = None,
    quality: int = JPEG_QUALITY,
) -> bytes:
    """The JPEG of ``redact(image, ...)``: the bytes a stored snapshot may hold.

    ``check`` (the face detector on one image, e.g. ``lambda im: faces.detect([im])[0]``)
    is run on the JPEG decoded back, what it still finds is obscured too, up to
    ``CHECK_ROUNDS`` times. An obscured face next to a hand or a collar can make a new
    face-like pattern: seen on bus.jpg, a hand on a chest under an obscured face at 0.51."""
    faces = list(faces)
    vehicles, text_boxes, persons = list(vehicles), list(text_boxes), list(persons)
    jpeg = redact(image, faces, vehicles, text_boxes, persons).to_jpeg(quality)
    if check is None:
        return jpeg
    for _ in range(CHECK_ROUNDS):
        found = list(check(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)))
        if not found:
            break
        # Obscured too; after the last round without a further check.
        faces += found
        jpeg = redact(image, faces, vehicles, text_boxes, persons).to_jpeg(quality)
    return jpeg


def write_snapshot(redacted: RedactedImage, path: Path, quality: int = JPEG_QUALITY) -> Path:
    """Write a redacted picture as JPEG (atomically: a reader never sees half a file)."""
    if not isinstance(redacted, RedactedImage):
        raise TypeError(
            f"write_snapshot stores only a RedactedImage (from redact), got "
            f"{type(redacted).__name__}: a raw frame is never written"
        )
    path = Path(path)
    write_atomic(path, redacted.to_jpeg(quality))
    return path


def store_snapshot(
    path: Path,
    image: np.ndarray,
    faces: Iterable[Any],
    vehicles: Iterable[Any] = (),
    text_boxes: Iterable[Any] = (),
    persons: Iterable[Any] = (),
    *,
    check: Callable[[np.ndarray], Sequence[Any]] | None = None,
) -> Path:
    """``snapshot``'s bytes written atomically to ``path``: how the vision stage stores a
    frame (the only way it can: it never holds the encoder of a raw frame)."""
    path = Path(path)
    write_atomic(path, snapshot(image, faces, vehicles, text_boxes, persons, check=check))
    return path


def vehicles_and_persons(detections: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """NanoDet's detections → (vehicles: car, truck, bus, motorcycle; persons)."""
    vehicles = [d for d in detections if d.class_name in VEHICLE_CLASSES]
    persons = [d for d in detections if d.class_name == PERSON_CLASS]
    return vehicles, persons
