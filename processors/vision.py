"""The vision stage's pure steps: a frames.raw message in, a validated frame or a typed
failure out; a frame's detections and tracking as the ``frame_detections`` record the
stage publishes (and reads back to rebuild its trackers).

No Kafka, Triton or ClickHouse here (``processors.vision_stage`` is the Kafka edge); the
same functions run in the live stage, its rebuild and the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from processors.tracker import Detected, FrameDetections
from schemas.errors import ErrorKind, RecordError
from schemas.records import DetectedFrame, VideoFrameRef, parse_record, to_wire
from streams.codecs import INLINE_URI, decode_frame, decode_json

# 4K UHD: a larger frame is refused before it is decoded (a 2 MB JPEG of one colour can
# claim 20000×20000 pixels and take gigabytes to decode).
MAX_FRAME_PIXELS = 3840 * 2160
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, without decoding; None when
    there is none (not a JPEG, or cut short)."""
    at = 2  # after FFD8
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF_MARKERS:
            if at + 9 > len(data):
                return None
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header: malformed
            return None
        at += 2 + length
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    header: VideoFrameRef
    image: np.ndarray  # BGR uint8, the header's size


def read_frame(value: bytes | None, max_bytes: int) -> Frame | RecordError:
    """A frames.raw message as a frame, or why it is not one (for the dead letter)."""
    try:
        raw_header, jpeg = decode_frame(value, max_bytes)
        return _frame(raw_header, jpeg)
    except RecordError as err:
        return err


def read_frame_ref(
    value: bytes | None, max_bytes: int, load: Callable[[str], bytes]
) -> Frame | RecordError:
    """A frames.refs message (a ``video_frame`` naming its JPEG in an object store) as a
    frame, the image fetched by ``load(uri)``; or why it is not one."""
    try:
        raw_header = decode_json(value, max_bytes)
        if isinstance(raw_header, dict) and raw_header.get("uri") == INLINE_URI:
            raise RecordError(ErrorKind.INVALID_FIELD, "an inline frame on frames.refs")
        uri = raw_header.get("uri") if isinstance(raw_header, dict) else None
        if not isinstance(uri, str):
            return _frame(raw_header, b"")  # the record's own validation says what is wrong
        try:
            jpeg = load(uri)
        except (OSError, ValueError) as exc:
            raise RecordError(ErrorKind.INVALID_FIELD,
                              f"frame image: cannot read {uri}: {exc}") from exc
        return _frame(raw_header, jpeg)
    except RecordError as err:
        return err


def load_file_uri(uri: str, max_bytes: int = 16 * 1024 * 1024) -> bytes:
    """An object-store reference's bytes: ``file://`` here (a bucket's client in
    production); a file over ``max_bytes`` is refused unread."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"scheme {parsed.scheme!r} is not served here (file:// only)")
    path = Path(unquote(parsed.path))
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{size:,} bytes, over {max_bytes:,}")
    return path.read_bytes()


def _frame(raw_header: object, jpeg: bytes) -> Frame:
    header = parse_record(raw_header)
    if not isinstance(header, VideoFrameRef):
        raise RecordError(ErrorKind.WRONG_TOPIC, f"a {header.kind} record where a frame was due")
    if not jpeg.startswith(b"\xff\xd8"):
        raise RecordError(ErrorKind.INVALID_FIELD, "frame image: not a JPEG (no FFD8 start)")
    size = jpeg_size(jpeg)
    if size is None:
        raise RecordError(ErrorKind.INVALID_FIELD, "frame image: the JPEG does not decode "
                          "(no frame header)")
    width, height = size
    if width * height > MAX_FRAME_PIXELS:
        raise RecordError(
            ErrorKind.OVERSIZE,
            f"frame image is {width}×{height} ({width * height:,} pixels), over the "
            f"stage's {MAX_FRAME_PIXELS:,} (4K): larger frames are scaled down by the "
            "camera's publisher (citystream frames --max-width)",
        )
    if (width, height) != (header.width, header.height):
        raise RecordError(
            ErrorKind.INVALID_FIELD,
            f"frame image is {width}×{height}, the header says "
            f"{header.width}×{header.height}",
        )
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RecordError(ErrorKind.INVALID_FIELD, "frame image: the JPEG does not decode")
    return Frame(header, image)


def tracker_input(header: VideoFrameRef, found: Sequence[Any]) -> FrameDetections:
    """What the tracker takes for a frame: anything with box, class_name and score."""
    return FrameDetections(header.camera_id, header.captured_at, header.seq, header.width,
                           header.height, tuple(found))


def detected_frame(
    header: VideoFrameRef,
    found: Sequence[Any],
    assignments: Sequence[int | None],
    codes: Mapping[str, str],
    model: str,
    processed_at: datetime,
    latency_ms: float,
    snapshot_uri: str | None = None,
) -> dict[str, Any]:
    """The ``frame_detections`` wire record: every detection of the frame, with its code
    (``codes``: class -> event code, where the class means a city problem) and its track
    (None: not tracked or not yet confirmed)."""
    detections = [
        {"box": [round(float(v), 1) for v in d.box], "class_name": d.class_name,
         "code": codes.get(d.class_name), "score": round(float(d.score), 4),
         "track_id": f"{header.camera_id}/{track}" if track is not None else None}
        for d, track in zip(found, assignments, strict=True)
    ]  # fmt: skip
    record = DetectedFrame.model_validate({
        "kind": "frame_detections", "schema_version": 1, "frame_id": header.frame_id,
        "camera_id": header.camera_id, "seq": header.seq,
        "captured_at": header.captured_at.isoformat(),
        "width": header.width, "height": header.height, "model": model,
        "detections": detections, "snapshot_uri": snapshot_uri,
        "processed_at": processed_at.astimezone(UTC).isoformat(),
        "latency_ms": round(latency_ms, 2),
    })  # fmt: skip
    return to_wire(record)


def replayed(record: DetectedFrame) -> FrameDetections:
    """A published frame as the tracker saw it (for a rebuild)."""
    found = [Detected(tuple(d.box), d.class_name, d.score) for d in record.detections]
    return FrameDetections(record.camera_id, record.captured_at, record.seq, record.width,
                           record.height, tuple(found))


# ---- what is written in view: small ads (B01) and banners (B02) ------------------------------
TEXT_CODES = (("small_ad", "B01", "非法小广告"), ("banner", "B02", "未经审批的横幅"))


@dataclass(frozen=True, slots=True)
class TextFinding:
    """What a camera's frame says, read and judged (``models.vision.ocr.classify_text``):
    whether it is a small ad, a banner, the evidence (numbers masked) and the lines'
    mean confidence."""

    small_ad: bool
    banner: bool
    evidence: tuple[str, ...]
    confidence: float


def text_event_ids(camera_id: str, captured_at: datetime, cooldown_s: float,
                   finding: TextFinding) -> list[tuple[str, str, str, str]]:
    """(event id, code, class, what it is) for each kind the frame shows. The id names
    the camera, the code and the cooldown period the frame falls in: the same poster seen
    all day is one event per period, and a frame read twice (a restart) the same one."""
    bucket = int(captured_at.timestamp() // cooldown_s)
    return [
        (f"v-{camera_id[:24]}-{code}-{bucket}", code, kind, words)
        for kind, code, words in TEXT_CODES
        if getattr(finding, kind)
    ]


def text_description(camera_id: str, words: str, finding: TextFinding) -> str:
    evidence = "；".join(finding.evidence[:4])
    return f"摄像头{camera_id}识别到{words}" + (f"（{evidence}）" if evidence else "")
