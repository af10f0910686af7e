"""``citystream frames`` against a real broker: real footage (vtest.avi) into frames.raw,
keyed by camera, every frame a valid header and a decodable JPEG; refusals and
references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer

from infra.worker_process import settings_env
from schemas.records import VideoFrameRef, parse_record
from streams.codecs import decode_frame
from streams.kafka_admin import client_config, create_topics
from streams.settings import REPO_ROOT, Settings
from streams.topics import FRAMES_RAW, VIDEO_FRAMES

pytestmark = pytest.mark.integration
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@pytest.fixture
def frame_settings(kafka, tmp_path: Path, unique: str) -> Settings:
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, topic_prefix=f"t{unique}.",
                        consumer_group=f"g{unique}", var_dir=tmp_path / "var",
                        topic_partitions=3)
    create_topics(settings)
    return settings


@pytest.fixture
def camera(tmp_path: Path) -> Path:
    path = tmp_path / "camera.json"
    path.write_text(json.dumps({
        "camera_id": "cam-vtest",
        "reference_size": [768, 576],
        "location": {"district": "市南区", "road": "香港中路", "location_type": "main_road",
                     "lon": 120.38, "lat": 36.06},
    }, ensure_ascii=False))
    return path


def _frames(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "frames", *args],
        env=settings_env(settings), capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )


def _read(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(settings.topic(topic), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000,
                             max_partition_fetch_bytes=4 * 1024 * 1024,
                             **client_config(settings))
    try:
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def test_real_footage_lands_in_frames_raw(frame_settings: Settings, camera: Path) -> None:
    run = _frames(frame_settings, str(VTEST), "--camera", str(camera), "--fps", "5",
                  "--limit", "12", "--start", "2026-11-20T08:00:00+08:00")
    assert run.returncode == 0, run.stderr
    assert "12 frames of camera cam-vtest to frames.raw, 0 refused" in run.stderr
    messages = _read(frame_settings, FRAMES_RAW.name)
    assert len(messages) == 12 and {k for k, _ in messages} == {b"cam-vtest"}
    decoded = sorted((decode_frame(v, FRAMES_RAW.max_message_bytes) for _, v in messages),
                     key=lambda f: f[0]["seq"])
    assert [h["seq"] for h, _ in decoded] == list(range(12))
    for header, jpeg in decoded:
        record = parse_record(header)
        assert isinstance(record, VideoFrameRef) and record.camera_id == "cam-vtest"
        assert (record.width, record.height, record.district) == (768, 576, "市南区")
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (576, 768, 3)
    # vtest.avi is 10 fps: at 5 fps every other frame, 0.2 s apart from the start given.
    assert decoded[3][0]["captured_at"] == "2026-11-20T00:00:00.600000+00:00"


def test_references_go_to_frames_refs(frame_settings: Settings, camera: Path,
                                      tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for name in ("scenetext01.jpg", "scenetext05.jpg"):
        (store / name).write_bytes((VTEST.parent.parent / "text" / name).read_bytes())
    run = _frames(frame_settings, str(store), "--camera", str(camera), "--refs")
    assert run.returncode == 0, run.stderr
    messages = _read(frame_settings, VIDEO_FRAMES.name)
    records = [parse_record(orjson.loads(v)) for _, v in messages]
    assert len(records) == 2 and not _read(frame_settings, FRAMES_RAW.name)
    for record in records:
        assert isinstance(record, VideoFrameRef)
        assert Path(record.uri.removeprefix("file://")).parent == store.resolve()
    video = _frames(frame_settings, str(VTEST), "--camera", str(camera), "--refs")
    assert video.returncode != 0 and "unblurred" in video.stderr


def test_a_bad_camera_config_or_source_is_a_clear_error(frame_settings: Settings,
                                                         tmp_path: Path, camera: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"camera_id": "has space"}')
    run = _frames(frame_settings, str(VTEST), "--camera", str(bad))
    assert run.returncode != 0 and "citystream frames:" in run.stderr
    assert "Traceback" not in run.stderr
    run = _frames(frame_settings, str(tmp_path / "nope.mp4"), "--camera", str(camera))
    assert run.returncode != 0 and "does not exist" in run.stderr
