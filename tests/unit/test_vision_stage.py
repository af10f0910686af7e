"""The vision stage's batch step (processors.vision_stage.process_batch) and its rebuild,
with a scripted detector: what is published for good frames, bad frames and frames a
restart already published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import orjson

from processors.camera_config import parse_camera_config
from processors.tracker import Detected
from processors.vision_stage import CameraStates, process_batch, rebuild_from
from schemas.records import CityEvent, DetectedFrame, parse_record
from streams.codecs import encode_frame

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
CAMERA = parse_camera_config({
    "camera_id": "cam-1",
    "location": {"district": "市南区", "road": "香港中路", "location_type": "main_road"},
    "reference_size": [160, 120],
    "zones": [{"name": "lane", "kind": "fire_lane",
               "polygon": [[0, 0], [160, 0], [160, 120], [0, 120]]}],
    "rules": [{"name": "lane.parked", "zone": "lane", "kind": "dwell", "classes": ["car"],
               "min_seconds": 2, "code": "D03"}],
    "tracker": {"min_hits": 2},
})
JPEG = cv2.imencode(".jpg", np.zeros((120, 160, 3), np.uint8))[1].tobytes()


@dataclass(frozen=True)
class _Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def _frame(seq: int, camera: str = "cam-1", jpeg: bytes = JPEG) -> _Msg:
    at = T0 + timedelta(seconds=seq)
    header = {"kind": "video_frame", "schema_version": 1,
              "frame_id": f"{camera}-{int(at.timestamp() * 1000)}", "camera_id": camera,
              "captured_at": at.isoformat(), "seq": seq, "uri": "inline", "width": 160,
              "height": 120}
    return _Msg("frames.raw", 0, seq, camera.encode(), encode_frame(header, jpeg))


def _parked_car(images: list[Any]) -> list[list[Detected]]:
    return [[Detected((40.0, 40.0, 100.0, 90.0), "car", 0.9)] for _ in images]


def _run(messages: list[_Msg], states: CameraStates):
    return process_batch(messages, _parked_car, {"cam-1": CAMERA}, states,
                         lambda name: f"t.{name}", "nanodet/test", {})


def _by_topic(outputs) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for topic, _, value in outputs.messages:
        out.setdefault(topic, []).append(orjson.loads(value))
    return out


def test_a_car_that_stays_is_tracked_and_raises_one_event() -> None:
    states = CameraStates()
    outputs = _run([_frame(s) for s in range(6)], states)
    published = _by_topic(outputs)
    frames = [parse_record(r) for r in published["t.vision.detections"]]
    assert [f.seq for f in frames] == list(range(6))
    assert all(isinstance(f, DetectedFrame) and len(f.detections) == 1 for f in frames)
    # Confirmed from the second sighting on (min_hits 2): one track throughout.
    assert [f.detections[0].track_id for f in frames][1:] == ["cam-1/1"] * 5
    events = [parse_record(e) for e in published["t.city.events"]]
    assert len(events) == 1 and isinstance(events[0], CityEvent)
    event = events[0]
    assert (event.code, event.source, event.camera_id, event.detected_class) == (
        "D03", "camera", "cam-1", "car")
    assert event.district == "市南区" and event.confidence == 0.9
    assert (outputs.frames, outputs.events, outputs.dead) == (6, 1, 0)
    # Later frames: the same car raises nothing more.
    more = _by_topic(_run([_frame(s) for s in range(6, 9)], states))
    assert "t.city.events" not in more


def test_bad_frames_are_dead_letters_with_their_reasons() -> None:
    states = CameraStates()
    messages = [_Msg("frames.raw", 0, 1, None, b"junk"), _frame(2, jpeg=b"\xff\xd8 not jpeg"),
                _frame(3, camera="cam-x"), _frame(4)]
    outputs = _run(messages, states)
    published = _by_topic(outputs)
    letters = published["t.citystream.dead_letters"]
    assert [(d["source_offset"], d["processor"]) for d in letters] == [
        (1, "vision"), (2, "vision"), (3, "vision")]
    assert "CSF1" in letters[0]["reason"] and "does not decode" in letters[1]["reason"]
    assert "'cam-x' has no configuration" in letters[2]["reason"]
    assert len(published["t.vision.detections"]) == 1 and outputs.dead == 3


def test_a_rebuild_replays_published_frames_and_skips_them_after() -> None:
    first = CameraStates()
    published = _by_topic(_run([_frame(s) for s in range(3)], first))
    records = [parse_record(r) for r in published["t.vision.detections"]]
    restarted = CameraStates()
    assert rebuild_from(records, {"cam-1": CAMERA}, restarted) == 3
    assert restarted.values == first.values  # the same tracks, the same clocks
    # The frames come again (offsets not committed before the crash): nothing twice.
    again = _run([_frame(s) for s in range(5)], restarted)
    seqs = [orjson.loads(v)["seq"] for t, _, v in again.messages if t == "t.vision.detections"]
    assert seqs == [3, 4] and again.skipped == 3


def _claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header claims another size (a decompression bomb's
    shape, without the bomb)."""
    data = bytearray(JPEG)
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_frame_size_is_read_from_the_jpeg_header_before_decoding() -> None:
    from processors.vision import MAX_FRAME_PIXELS, jpeg_size

    assert jpeg_size(JPEG) == (160, 120)
    assert jpeg_size(_claiming(20000, 20000)) == (20000, 20000)
    for junk in (b"", b"\xff\xd8", b"\xff\xd8\x00\x01", b"\xff\xd8\xff\xda\x00\x02"):
        assert jpeg_size(junk) is None
    outputs = _run([_frame(1, jpeg=_claiming(20000, 20000)), _frame(2, jpeg=_claiming(80, 60))],
                   CameraStates())
    letters = _by_topic(outputs)["t.citystream.dead_letters"]
    assert [d["error_kind"] for d in letters] == ["oversize", "invalid_field"]
    assert f"over the stage's {MAX_FRAME_PIXELS:,}" in letters[0]["reason"]
    assert "80×60, the header says 160×120" in letters[1]["reason"]


def test_references_are_read_from_their_uri(tmp_path) -> None:
    photo = tmp_path / "store" / "p 1.jpg"  # a space: the uri quotes it
    photo.parent.mkdir()
    photo.write_bytes(JPEG)

    def ref(seq: int, uri: str) -> _Msg:
        at = T0 + timedelta(seconds=seq)
        header = {"kind": "video_frame", "schema_version": 1, "frame_id": f"cam-1-r{seq}",
                  "camera_id": "cam-1", "captured_at": at.isoformat(), "seq": seq, "uri": uri,
                  "width": 160, "height": 120}
        return _Msg("t.frames.refs", 0, seq, b"cam-1", orjson.dumps(header))

    outputs = _run([ref(1, photo.resolve().as_uri()), ref(2, (tmp_path / "gone.jpg").as_uri()),
                    ref(3, "s3://bucket/x.jpg"), ref(4, "inline")], CameraStates())
    published = _by_topic(outputs)
    assert [f["frame_id"] for f in published["t.vision.detections"]] == ["cam-1-r1"]
    reasons = [d["reason"] for d in published["t.citystream.dead_letters"]]
    assert "cannot read" in reasons[0] and "No such file" in reasons[0]
    assert "scheme 's3' is not served here" in reasons[1]
    assert "an inline frame on frames.refs" in reasons[2]


def test_a_camera_that_reads_raises_small_ads_and_banners_once_per_period() -> None:
    from processors.vision import TextFinding
    from processors.vision_stage import process_batch

    reading = parse_camera_config({**CAMERA.model_dump(mode="json"),
                                   "ocr": {"every_seconds": 10, "cooldown_seconds": 3600}})
    read: list[int] = []

    def read_text(image) -> TextFinding:
        read.append(1)
        return TextFinding(True, len(read) == 2, ("phone 139****5678", "ad word 办证 (3)"),
                           0.93)

    def run(seqs: list[int], states: CameraStates):
        return _by_topic(process_batch([_frame(s) for s in seqs], _parked_car,
                                       {"cam-1": reading}, states, lambda n: f"t.{n}",
                                       "nanodet/test", {}, read_text=read_text))

    states = CameraStates()
    first = run([0, 1, 2], states)  # read at 0 s only (every 10 s)
    texts = [e for e in first["t.city.events"] if e["code"] in ("B01", "B02")]
    assert len(read) == 1 and [e["code"] for e in texts] == ["B01"]
    event = texts[0]
    assert (event["detected_class"], event["confidence"], event["camera_id"]) == (
        "small_ad", 0.93, "cam-1")
    assert "非法小广告" in event["description"] and "139****5678" in event["description"]
    assert "13912345678" not in json.dumps(event, ensure_ascii=False)
    later = run([12], states)  # read again at 12 s: the same ad (no event), now a banner too
    codes = [e["code"] for e in later.get("t.city.events", []) if e["code"] in ("B01", "B02")]
    assert len(read) == 2 and codes == ["B02"]
    # A camera without "ocr" is never read.
    states_plain = CameraStates()
    _run([_frame(s) for s in range(3)], states_plain)
    assert len(read) == 2
