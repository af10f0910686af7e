"""Frame ingestion (streams.frames) and the frames.raw envelope (streams.codecs): sampling,
capture times, refusals, references; no broker (a recording ``send``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from schemas.errors import ErrorKind, RecordError
from schemas.records import VideoFrameRef, parse_record
from streams.codecs import INLINE_URI, decode_frame, encode_frame
from streams.frames import FrameOptions, FrameSourceError, publish_frames, read_source

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SITE = {"district": "市南区", "road": "香港中路", "location_type": "main_road", "lon": 120.38,
        "lat": 36.06, "street": None}


class _Delivered:
    def get(self, timeout: float) -> None:
        return None


@dataclass
class _Recorder:
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def __call__(self, topic: str, key: bytes, value: bytes) -> _Delivered:
        self.sent.append((topic, key, value))
        return _Delivered()


def _video(path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
        cv2.putText(image, str(i), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path


def _publish(source: Path | str, recorder: _Recorder, **options: Any):
    opts = FrameOptions(camera_id="cam-1", site=SITE, start=START, **options)
    return publish_frames(str(source), opts, recorder, lambda name: f"t.{name}",
                          clock=lambda: START + timedelta(days=1))


def test_envelope_round_trip_and_every_way_it_breaks() -> None:
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    header = {"kind": "video_frame", "uri": INLINE_URI, "seq": 3}
    value = encode_frame(header, jpeg)
    assert decode_frame(value, 1 << 20) == (header, jpeg)
    broken = {
        b"": ErrorKind.EMPTY,
        b"GIF89a...": ErrorKind.MALFORMED_JSON,
        value[:6]: ErrorKind.MALFORMED_JSON,
        b"CSF1" + (10**6).to_bytes(4, "big") + b"{}": ErrorKind.MALFORMED_JSON,
        value[:-len(jpeg)] + b"\x89PNG": ErrorKind.INVALID_FIELD,
        b"CSF1" + (2).to_bytes(4, "big") + b"[1" + jpeg: ErrorKind.MALFORMED_JSON,
        b"CSF1" + (2).to_bytes(4, "big") + b"\xff\xfe" + jpeg: ErrorKind.UNDECODABLE,
    }
    for raw, kind in broken.items():
        with pytest.raises(RecordError) as err:
            decode_frame(raw, 1 << 20)
        assert err.value.kind == kind, raw[:12]
    with pytest.raises(RecordError) as err:
        decode_frame(value, len(value) - 1)
    assert err.value.kind == ErrorKind.OVERSIZE
    with pytest.raises(ValueError, match="inline"):
        encode_frame({"uri": "s3://x"}, jpeg)


def test_a_video_is_sampled_at_the_rate_asked_with_its_own_clock(tmp_path: Path) -> None:
    video = _video(tmp_path / "v.avi", 30)  # 3 s at 10 fps
    recorder = _Recorder()
    report = _publish(video, recorder, fps=2)
    assert report.ok and report.published == 6
    headers = [decode_frame(v, 1 << 20)[0] for _, _, v in recorder.sent]
    assert [h["seq"] for h in headers] == list(range(6))
    times = [datetime.fromisoformat(h["captured_at"]) for h in headers]
    assert times == [START + timedelta(seconds=0.5 * i) for i in range(6)]
    assert {t for t, _, _ in recorder.sent} == {"t.frames.raw"}
    assert {k for _, k, _ in recorder.sent} == {b"cam-1"}
    record = parse_record(headers[0])
    assert isinstance(record, VideoFrameRef)
    assert (record.width, record.height, record.district, record.road) == (
        160, 120, "市南区", "香港中路")
    assert record.street is None  # None fields are left out, not sent as null
    image = cv2.imdecode(np.frombuffer(decode_frame(recorder.sent[0][2], 1 << 20)[1], np.uint8),
                         cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3)


def test_frames_over_the_topic_limit_are_refused_with_the_way_out(tmp_path: Path) -> None:
    video = _video(tmp_path / "v.avi", 10, size=(640, 480))
    recorder = _Recorder()
    opts = FrameOptions(camera_id="cam-1", site=SITE, start=START, fps=10)
    report = publish_frames(str(video), opts, recorder, str, max_message_bytes=1000)
    assert report.published == 0 and len(report.refused) == 10 and not report.ok
    assert "over frames.raw's limit of 1,000" in report.refused[0]
    assert "--max-width" in report.refused[0]
    shrunk = _Recorder()
    assert _publish(video, shrunk, fps=10, max_width=320).published == 10
    assert decode_frame(shrunk.sent[0][2], 1 << 20)[0]["width"] == 320


def test_references_name_photos_where_they_are_and_copy_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(store / name), np.zeros((30, 40, 3), np.uint8))
    before = sorted(tmp_path.rglob("*"))
    recorder = _Recorder()
    report = _publish(store, recorder, refs=True)
    assert report.published == 2 and sorted(tmp_path.rglob("*")) == before
    import orjson

    assert {t for t, _, _ in recorder.sent} == {"t.frames.refs"}
    records = [parse_record(orjson.loads(v)) for _, _, v in recorder.sent]
    assert [r.uri for r in records] == [(store / n).resolve().as_uri() for n in ("a.jpg", "b.jpg")]
    assert all(isinstance(r, VideoFrameRef) and (r.width, r.height) == (40, 30) for r in records)
    # A video's frames would have to be written out unblurred: refused.
    with pytest.raises(FrameSourceError, match="unblurred"):
        _publish(_video(tmp_path / "v.avi", 5), _Recorder(), refs=True)


def test_a_folder_of_photos_with_a_corrupt_one(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "c.png"):
        cv2.imwrite(str(folder / name), np.full((50, 80, 3), 128, np.uint8))
    (folder / "b.jpg").write_bytes(b"\x00\x01binary, not an image" * 10)
    (folder / "notes.txt").write_text("not a photo")
    recorder = _Recorder()
    report = _publish(folder, recorder)
    assert report.published == 2 and not report.ok
    assert report.refused == ["frame 1 (b.jpg): not a readable image"]
    header = decode_frame(recorder.sent[0][2], 1 << 20)[0]
    # Photos carry the time they were read, not a video position.
    assert header["captured_at"] == (START + timedelta(days=1)).isoformat()


def test_sources_that_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.avi").write_bytes(b"not a video at all")
    for source, message in ((tmp_path / "missing.mp4", "does not exist"),
                            (tmp_path / "empty", "no photos"),
                            (tmp_path / "x.avi", "x.avi")):
        with pytest.raises(FrameSourceError, match=message):
            list(read_source(str(source), 2.0))
    with pytest.raises(ValueError, match="fps"):
        list(read_source(str(tmp_path), 0))
