"""Real footage through the whole vision path: `citystream frames` publishes vtest.avi to
Kafka, `citystream vision` (its own process) runs the converted NanoDet, the trackers and
a camera's zone rules, the worker stores every frame's detections and dispatches the
camera's city events; bad frames (corrupt, oversize, unknown camera) become dead letters
with their reasons."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from kafka import KafkaProducer
from pipeline import isolated_settings

from infra.worker_process import settings_env
from models.vision import convert, convert_faces, ocr_models
from models.vision.detector import place_in_repository
from models.vision.ocr_runner import place_in_repository as place_ocr
from streams.codecs import encode_frame
from streams.kafka_admin import client_config, create_topics, wait_until_stored
from streams.settings import REPO_ROOT, Settings
from streams.topics import FRAMES_RAW

pytestmark = pytest.mark.integration
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FRAMES = 40  # 8 s of vtest.avi at 5 frames a second


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory: pytest.TempPathFactory, trained_models) -> Path:
    """The session's dispatch models and the converted NanoDet, in one repository."""
    repository = tmp_path_factory.mktemp("vision-pipeline") / "repository"
    shutil.copytree(trained_models.repository, repository)
    place_in_repository(repository, convert.build(log=lambda line: print(f"[vision] {line}")))
    assert convert_faces.build_and_place(repository) == 0  # blurring faces in snapshots
    ocr_models.build()
    place_ocr(repository)  # reading signs, for the camera that reads
    return repository


def _camera(cameras: Path) -> None:
    """vtest's camera with a zone over the whole path and a short dwell rule on people:
    people walk through vtest.avi, several stay in view for seconds."""
    cameras.mkdir(parents=True, exist_ok=True)
    config = json.loads((REPO_ROOT / "infra" / "cameras" / "vtest.json").read_text())
    config["zones"] = [{"name": "square", "kind": "any",
                        "polygon": [[0, 0], [768, 0], [768, 576], [0, 576]]}]
    config["rules"] = [{"name": "square.loitering", "zone": "square", "kind": "dwell",
                        "classes": ["person"], "min_seconds": 4, "code": "D08"}]
    (cameras / "vtest.json").write_text(json.dumps(config, ensure_ascii=False))
    # A camera on a street wall that reads what is posted there (no zones).
    sign = {"camera_id": "cam-wall", "location": config["location"],
            "reference_size": [800, 600], "ocr": {"every_seconds": 1}}
    (cameras / "wall.json").write_text(json.dumps(sign, ensure_ascii=False))


@pytest.fixture
def vision_settings(kafka, tmp_path: Path, unique: str, trained_models,
                    vision_models: Path) -> Settings:
    cameras = tmp_path / "cameras"
    _camera(cameras)
    base = isolated_settings(kafka.bootstrap, tmp_path, unique, trained_models)
    return base.model_copy(update={"model_repository": vision_models, "vision_enabled": True,
                                   "vision_cameras_dir": cameras})


@pytest.fixture
def vision_process(vision_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen]:
    log = (tmp_path / "vision.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "vision"],
                            env=settings_env(vision_settings), stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    yield proc
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims ``width``×``height``."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _frames(settings: Settings, *args: str) -> None:
    _frames_of(settings, VTEST, *args)


def _frames_of(settings: Settings, source: Path, *args: str, camera: str = "vtest.json") -> None:
    run = subprocess.run([sys.executable, "-m", "streams.cli", "frames", str(source),
                          "--camera", str(settings.vision_cameras_dir / camera), *args],
                         env=settings_env(settings), capture_output=True, text=True,
                         timeout=120, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr


def test_vtest_frames_become_detections_tracks_and_dispatched_events(
    vision_settings: Settings, worker_factory, vision_process, tmp_path: Path
) -> None:
    settings = vision_settings
    create_topics(settings)
    worker = worker_factory(settings)
    worker.start()
    _frames(settings, "--fps", "5", "--limit", str(FRAMES),
            "--start", "2026-11-20T08:00:00+08:00")
    # Two photos by reference (frames.refs): the stage fetches them from the store.
    store = tmp_path / "store"
    store.mkdir()
    for name in ("scenetext01.jpg", "scenetext05.jpg"):
        (store / name).write_bytes((VTEST.parent.parent / "text" / name).read_bytes())
    _frames_of(settings, store, "--refs")
    # A small-ad slip posted on a street wall, seen by the camera that reads.
    from test_vision_ocr import STREET, put_up, render

    wall = tmp_path / "wall"
    wall.mkdir()
    slip = render(["办证 刻章", "13912345678"], (330, 150), (245, 245, 240), (20, 20, 20), 40)
    street = cv2.imread(str(STREET))
    cv2.imwrite(str(wall / "wall.jpg"), cv2.resize(put_up(street, slip, (60, 80), 4.0),
                                                   (800, 600)))
    _frames_of(settings, wall, camera="wall.json")
    # Bad frames: not an envelope, a JPEG that does not decode, a camera nobody set up, a
    # JPEG claiming 20000×20000 pixels (refused before decoding).
    header = {"kind": "video_frame", "schema_version": 1, "frame_id": "x-1",
              "camera_id": "cam-vtest", "captured_at": "2026-11-20T00:00:00+00:00", "seq": 0,
              "uri": "inline", "width": 768, "height": 576}
    bad = [b"\x00not a frame", encode_frame(header, b"\xff\xd8 broken jpeg"),
           encode_frame({**header, "camera_id": "cam-nobody", "frame_id": "y-1"},
                        cv2.imencode(".jpg", np.zeros((576, 768, 3), np.uint8))[1].tobytes()),
           encode_frame({**header, "frame_id": "z-1", "width": 16000, "height": 16000},
                        _claiming(16000, 16000))]
    producer = KafkaProducer(**client_config(settings))
    for value in bad:
        producer.send(settings.topic(FRAMES_RAW.name), key=b"cam-vtest", value=value)
    producer.flush()
    producer.close()
    time.sleep(1)
    assert vision_process.poll() is None, (tmp_path / "vision.log").read_text()[-3000:]
    wait_until_stored(settings, 240)

    frames = worker.query("SELECT count() AS n, uniqExact(seq) AS seqs, min(width) AS w, "
                          "max(height) AS h FROM frame_detections WHERE width = 768 "
                          "AND camera_id = 'cam-vtest'")[0]
    assert (frames["n"], frames["seqs"], frames["w"], frames["h"]) == (FRAMES, FRAMES, 768, 576)
    photos = worker.query("SELECT width, height FROM frame_detections WHERE width != 768 "
                          "AND camera_id = 'cam-vtest'")
    assert sorted((p["width"], p["height"]) for p in photos) == [(800, 600), (1280, 960)]
    people = worker.query(
        "SELECT count() AS n, uniqExact(track_id) AS tracks, countIf(track_id != '') AS tracked "
        "FROM vision_detections WHERE class_name = 'person'")[0]
    # vtest.avi shows several people walking in every frame; each is one track, not one
    # per frame.
    assert people["n"] >= 2 * FRAMES and people["tracked"] >= FRAMES
    assert 2 <= people["tracks"] <= people["n"] / 4
    # The van and the car parked on the service road are seen in every frame (stored;
    # this camera's rules track people only).
    vehicles = worker.query("SELECT count() AS n FROM vision_detections WHERE camera_id = "
                            "'cam-vtest' AND class_name IN ('car', 'truck')")[0]
    assert vehicles["n"] >= FRAMES
    # The wall camera read the slip: one small ad (B01), dispatched, its evidence masked.
    ads = worker.query("SELECT event_id, code, detected_class, description FROM city_events "
                       "WHERE camera_id = 'cam-wall'")
    assert [(a["code"], a["detected_class"]) for a in ads] == [("B01", "small_ad")]
    assert "非法小广告" in ads[0]["description"] and "13912345678" not in ads[0]["description"]
    assert worker.query("SELECT count() AS n FROM dispatch_decisions WHERE input_id = "
                        f"'{ads[0]['event_id']}'")[0]["n"] == 1
    events = worker.query(
        "SELECT event_id, code, source, camera_id, detected_class, confidence, district, "
        "snapshot_uri FROM city_events WHERE source = 'camera' AND camera_id = 'cam-vtest'")
    assert events, "no dwell event from people staying over 4 s"
    assert {(e["code"], e["camera_id"], e["detected_class"], e["district"]) for e in events} == {
        ("D08", "cam-vtest", "person", "市南区")}
    assert all(0 < e["confidence"] <= 1 for e in events)
    # Each event's snapshot is stored, blurred, under the snapshot directory; nothing else
    # is written there (no raw frame).
    snapshots = sorted((settings.var_dir / "snapshots" / "cam-vtest").rglob("*.jpg"))
    assert {e["snapshot_uri"] for e in events} <= {p.resolve().as_uri() for p in snapshots}
    for path in snapshots:
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (576, 768, 3)
    # The board's 现场快照 link: the dispatcher gets the stored (blurred) snapshot, a
    # report without one is a 404, nobody signed in gets nothing.
    from web_client import WebClient

    client = WebClient(worker.url(""))
    passwords = worker.ensure_accounts()
    assert client.sign_in("dispatcher", passwords["dispatcher"]).status == 303
    served = client.get(f"/api/snapshot?input_id={events[0]['event_id']}")
    assert served.status == 200 and served.headers["Content-Type"] == "image/jpeg"
    assert served.body == Path(events[0]["snapshot_uri"].removeprefix("file://")).read_bytes()
    assert client.get("/api/snapshot?input_id=no-such-report").status == 404
    assert WebClient(worker.url("")).get(
        f"/api/snapshot?input_id={events[0]['event_id']}").status in (401, 303)
    # One event per track: never more events than tracks.
    assert len(events) <= people["tracks"]
    decided = worker.query(
        "SELECT count() AS n FROM dispatch_decisions WHERE input_id IN "
        "(SELECT event_id FROM city_events WHERE camera_id = 'cam-vtest')")[0]
    assert decided["n"] == len(events)
    dead = worker.query("SELECT error_kind, reason FROM dead_letters WHERE processor = 'vision' "
                        "ORDER BY reason")
    reasons = [d["reason"] for d in dead]
    assert len(dead) == 4, reasons
    assert sorted(d["error_kind"] for d in dead) == [
        "invalid_field", "invalid_field", "malformed_json", "oversize"]
    assert any("no CSF1 envelope" in r for r in reasons)
    assert any("does not decode" in r for r in reasons)
    assert any("'cam-nobody' has no configuration" in r for r in reasons)
