"""Faces on real photos, and none in the stored snapshot: the converted BlazeFace finds the
faces (in-process and through a real tritonserver), ``processors.privacy.snapshot``
obscures them, and neither BlazeFace nor OpenCV's Haar cascade (an independent detector,
shipped in the opencv wheel) finds a face in the JPEG decoded back.

Photos, all from installed packages: Grace Hopper's portrait (matplotlib's sample data),
Debian opencv-doc's ``messi5.jpg``, two portraits, a face-swap result and a grid of 24
faces with landmarks drawn on (from its HTML tutorials), and ``bus.jpg`` (the ultralytics
wheel, fetched by the NanoDet conversion). The module fixture runs the cached conversions
(``make models``): under a second when models/build/vision/ is current.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline import checked

from models.vision import convert, convert_faces
from models.vision.detector import Detector, in_process_detector, place_in_repository
from models.vision.face_detector import (
    SERVING,
    FaceDetector,
    FaceModel,
    in_process_face_detector,
    triton_face_detector,
)
from models.vision.faces import Face
from processors.privacy import redact, snapshot, vehicles_and_persons

pytestmark = pytest.mark.integration

Box = tuple[float, float, float, float]
OPENCV_DOC = Path("/usr/share/doc/opencv-doc")
HTML = OPENCV_DOC / "opencv4" / "html"
GRID = HTML / "2.jpg"  # 8 × 3 faces, 730 × 276
# Photo → its faces, hand-checked (x1, y1, x2, y2: brow to chin).
FACES: dict[str, tuple[Box, ...]] = {
    "hopper": ((170, 140, 360, 325),),
    "messi5": ((222, 95, 258, 135),),
    "portrait1": ((140, 200, 500, 610),),
    "portrait2": ((140, 110, 300, 290),),
    "swapped": ((105, 85, 225, 205),),
    # The two men walking; the people cut off at the edges show no face.
    "bus": ((108, 418, 155, 469), (262, 425, 308, 474)),
}


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def decoded(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the snapshot is not a JPEG"
    return image


def haar_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty()
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
    return [tuple(int(v) for v in box) for box in found]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def vision_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Triton model repository with NanoDet and BlazeFace (cached conversions)."""
    log = lambda line: print(f"[vision] {line}")  # noqa: E731
    nanodet, blazeface = convert.build(log=log), convert_faces.build(log=log)
    repository = tmp_path_factory.mktemp("privacy") / "repository"
    place_in_repository(repository, nanodet)
    place_in_repository(repository, blazeface, SERVING)
    return repository


@pytest.fixture(scope="module")
def photos(vision_repository: Path) -> dict[str, np.ndarray]:
    paths = {
        "hopper": convert_faces.FacePaths().photo,
        "messi5": OPENCV_DOC / "examples" / "data" / "messi5.jpg",
        "portrait1": HTML / "230501201_1.jpg",
        "portrait2": HTML / "227943776_1.jpg",
        "swapped": HTML / "face_swapped.jpg",
        "bus": convert.Paths().photo,
    }
    images = {}
    for name, path in paths.items():
        image = cv2.imread(str(path))
        if image is None:
            pytest.fail(f"cannot read {path}: install Debian's opencv-doc (make system-deps)")
        images[name] = image
    return images


@pytest.fixture(scope="module")
def local(vision_repository: Path) -> Iterator[FaceDetector]:
    yield from checked(in_process_face_detector(vision_repository))


@pytest.fixture(scope="module")
def objects(vision_repository: Path) -> Iterator[Detector]:
    yield from checked(in_process_detector(vision_repository))


@pytest.fixture(scope="module")
def served(vision_triton) -> Iterator[FaceDetector]:
    yield from checked(triton_face_detector(vision_triton.grpc_url))


# ------------------------------------------------------------------------- the model


def test_the_face_model_finds_every_face_on_the_photos(
    local: FaceDetector, photos: dict[str, np.ndarray]
):
    for name, image in photos.items():
        [found] = local.detect([image])
        for face in FACES[name]:
            assert any(iou(f.box, face) >= 0.4 for f in found), (name, face, found)


def test_it_finds_most_faces_of_the_face_grid(local: FaceDetector):
    """24 tightly cropped faces, many with landmarks drawn over them: a hard case. Found
    here: 19 (the misses are the most heavily drawn-over)."""
    grid = cv2.imread(str(GRID))
    assert grid is not None and grid.shape == (276, 730, 3)
    [found] = local.detect([grid])
    cells = {(int((f.box[0] + f.box[2]) / 2 // (730 / 8)), int((f.box[1] + f.box[3]) / 2 // 92))
             for f in found}  # fmt: skip
    assert len(cells) >= 18, found
    assert len(found) <= 24


def test_no_face_on_pictures_without_people(local: FaceDetector):
    data = OPENCV_DOC / "examples" / "data"
    for name in ("fruits.jpg", "building.jpg", "leuvenA.jpg", "home.jpg", "baboon.jpg"):
        image = cv2.imread(str(data / name))
        assert image is not None, name
        assert local.detect([image]) == [[]], name


def test_triton_gives_the_in_process_faces(
    local: FaceDetector, served: FaceDetector, photos: dict[str, np.ndarray]
):
    images = list(photos.values())
    for name, remote, here in zip(photos, served.detect(images), local.detect(images), strict=True):
        assert len(remote) == len(here), name
        for r, h in zip(remote, here, strict=True):
            assert r.box == pytest.approx(h.box, abs=0.05) and abs(r.score - h.score) < 1e-4
    assert served.name == "triton-grpc"


def test_small_faces_are_found_in_a_large_frame_through_the_tiles(
    local: FaceDetector, vision_repository: Path, photos: dict[str, np.ndarray]
):
    """Grace Hopper's face shrunk to 20 px on a 1280×720 street (opencv-doc's leuvenA):
    the whole view alone (4 input pixels) misses it, a 512-pixel tile (10) finds it."""
    frame = cv2.resize(cv2.imread(str(OPENCV_DOC / "examples" / "data" / "leuvenA.jpg")),
                       (1280, 720))  # fmt: skip
    face = FACES["hopper"][0]
    scale = 20 / (face[2] - face[0])
    small = cv2.resize(photos["hopper"], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame[400 : 400 + small.shape[0], 700 : 700 + small.shape[1]] = small
    where = (700 + face[0] * scale, 400 + face[1] * scale, 700 + face[2] * scale,
             400 + face[3] * scale)  # fmt: skip
    [found] = local.detect([frame])
    assert [iou(f.box, where) >= 0.3 for f in found] == [True], (where, found)
    whole_only = in_process_face_detector(vision_repository, FaceModel(tile=None))
    try:
        assert whole_only.detect([frame]) == [[]]
    finally:
        whole_only.close()


# -------------------------------------------------------------------- the snapshot


def test_no_face_is_detectable_in_a_stored_snapshot(
    local: FaceDetector, served: FaceDetector, photos: dict[str, np.ndarray]
):
    """The stage's way: faces found, snapshot checked by the face model before it is
    kept; then neither BlazeFace (in-process, Triton) nor Haar finds a face in it."""

    def check(image: np.ndarray) -> list[Face]:
        return local.detect([image])[0]

    for name, image in photos.items():
        [faces] = local.detect([image])
        assert haar_faces(image), f"{name}: Haar must see the face before, or its check is void"
        stored = decoded(snapshot(image, faces, check=check))
        assert local.detect([stored]) == [[]], name
        assert served.detect([stored]) == [[]], name
        assert haar_faces(stored) == [], name


def test_one_pass_already_leaves_no_face_on_the_portraits(
    local: FaceDetector, photos: dict[str, np.ndarray]
):
    """Without the check, one pass of redact: no face on the portraits; on bus.jpg the
    faces are gone, but BlazeFace sees a face (0.51) in a hand on a chest just under an
    obscured face, the pattern the check is there for."""
    for name, image in photos.items():
        [faces] = local.detect([image])
        [again] = local.detect([decoded(snapshot(image, faces))])
        if name == "bus":
            assert not [f for f in again for face in FACES[name] if iou(f.box, face) > 0.1]
            assert len(again) <= 1
        else:
            assert again == [], name


def test_every_face_found_on_the_grid_is_gone_from_its_snapshot(local: FaceDetector):
    grid = cv2.imread(str(GRID))
    [faces] = local.detect([grid])
    redacted = redact(grid, faces)
    stored = decoded(redacted.to_jpeg())

    def on_a_region(box: Box) -> bool:
        return any(
            (min(box[2], r.box[2]) - max(box[0], r.box[0]))
            * (min(box[3], r.box[3]) - max(box[1], r.box[1]))
            > 0.5 * (box[2] - box[0]) * (box[3] - box[1])
            for r in redacted.regions
            if min(box[2], r.box[2]) > max(box[0], r.box[0])
        )

    [again] = local.detect([stored])
    assert not [f for f in again if on_a_region(f.box)]
    assert not [h for h in haar_faces(stored)
                if on_a_region((h[0], h[1], h[0] + h[2], h[1] + h[3]))]  # fmt: skip
    # What is left are faces the model missed in the first place.
    assert len(again) <= 24 - len(faces)


def test_a_street_snapshot_with_the_detectors_boxes(
    local: FaceDetector, objects: Detector, photos: dict[str, np.ndarray]
):
    """The vision stage's path: NanoDet's people and vehicles and BlazeFace's faces, one
    frame, one JPEG with no face and the bus's plate band obscured."""
    image = photos["bus"]
    [faces], [detections] = local.detect([image]), objects.detect([image])
    vehicles, persons = vehicles_and_persons(detections)
    assert [v.class_name for v in vehicles] == ["bus"] and len(persons) == 4
    redacted = redact(image, faces, vehicles, persons=persons)
    kinds = [r.kind for r in redacted.regions]
    assert kinds.count("face") >= 2 and kinds.count("head") == 4 and "plate-band" in kinds
    stored = decoded(redacted.to_jpeg())
    assert local.detect([stored]) == [[]]
    assert haar_faces(stored) == []
    # Above the heads and the band (the bus's windows, the building) nothing changed.
    top = min(r.box[1] for r in redacted.regions)
    assert np.abs(stored[:top].astype(int) - image[:top].astype(int)).mean() < 3


def test_face_detection_time_per_image(local: FaceDetector, photos: dict[str, np.ndarray]):
    """Measured, printed (-s): one onnxruntime thread, per image, views included."""
    frame = cv2.resize(photos["bus"], (1280, 720))
    for name, image in [*photos.items(), ("1280x720", frame)]:
        local.detect([image])
        started = time.perf_counter()
        for _ in range(3):
            [found] = local.detect([image])
        ms = (time.perf_counter() - started) / 3 * 1000
        print(f"{name} {image.shape[1]}x{image.shape[0]}: {ms:.0f} ms, {len(found)} faces")
        assert ms < 2000  # loose: the machine is shared; the README has the numbers
    assert all(isinstance(f, Face) for f in found)
