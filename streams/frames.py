"""``citystream frames SOURCE``: a camera's frames into Kafka.

SOURCE is a video file, an RTSP/HTTP stream URL, a folder of photos or one photo, read
with OpenCV and sampled at ``fps``. Each kept frame is JPEG-encoded and published,
keyed by camera id, either

* inline to ``frames.raw``: one self-contained value (``streams.codecs.encode_frame``:
  a ``video_frame`` header with the camera's place, capture time and sequence number,
  then the JPEG), refused with a clear error past the topic's size limit; or
* by reference (``refs``, for 4K photos already in an object store): a ``video_frame``
  record naming each photo where it is, published to ``frames.refs`` as any other input
  record. Nothing is copied: this project never writes an unblurred frame to disk, so a
  video's frames go inline or not at all.

Capture times: a file's frames are stamped from ``start`` plus their position in the
video (so a replayed video keeps its own timing); a stream's and a folder's with the
clock when read. ``realtime`` paces a file as a live camera would send it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson

from streams.codecs import INLINE_URI, encode_frame
from streams.topics import FRAMES_RAW, VIDEO_FRAMES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# The header's location fields, as a camera's configuration gives them.
SITE_FIELDS = ("district", "street", "road", "address", "location_type", "lon", "lat")


class FrameSourceError(RuntimeError):
    """The source cannot be read at all (missing, not a video or an image, no frames)."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    position_s: float | None  # into the video; None for a live stream or a photo
    image: np.ndarray  # BGR, uint8
    name: str  # where it came from (the photo's file name, or the source)
    path: Path | None = None  # the photo's file (None for a video's frames)
    index: int = 0  # the frame's number in the video (0 for a photo)


def _open_video(source: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise FrameSourceError(f"cannot open {source!r} as a video or stream")
    return capture


def read_source(source: str, fps: float) -> Iterator[RawFrame]:
    """The frames to publish, ``fps`` per second of video (every photo of a folder)."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    path = Path(source)
    if not _URL.match(source) and path.is_dir():
        photos = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise FrameSourceError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        yield from _read_photos(photos)
        return
    if not _URL.match(source) and not path.exists():
        raise FrameSourceError(f"{source} does not exist")
    if not _URL.match(source) and path.suffix.lower() in IMAGE_SUFFIXES:
        yield from _read_photos([path])
        return
    yield from _read_video(source, fps, live=bool(_URL.match(source)))


def _read_photos(photos: list[Path]) -> Iterator[RawFrame]:
    for photo in photos:
        image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if image is None:
            # One unreadable photo in a folder is reported by the caller, not fatal.
            yield RawFrame(None, np.empty((0, 0, 3), np.uint8), photo.name, photo)
            continue
        yield RawFrame(None, image, photo.name, photo)


def _read_video(source: str, fps: float, live: bool) -> Iterator[RawFrame]:
    capture = _open_video(source)
    try:
        native = capture.get(cv2.CAP_PROP_FPS) or 0.0
        last_bucket = -1
        index = 0
        read_any = False
        while True:
            ok, image = capture.read()
            if not ok:
                break
            read_any = True
            # Frame index over the native rate: a file's own clock, exact and seekless.
            at = index / native if native > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            index += 1
            # One frame per 1/fps slot: the first frame of each slot is kept.
            bucket = int(at * fps + 1e-9)
            if bucket == last_bucket:
                continue
            last_bucket = bucket
            yield RawFrame(None if live else at, image, source, index=index - 1)
        if not read_any:
            raise FrameSourceError(f"{source!r} gave no frames")
    finally:
        capture.release()


@dataclass(frozen=True, slots=True)
class Encoded:
    jpeg: bytes
    width: int
    height: int


def encode_jpeg(image: np.ndarray, quality: int, max_width: int | None) -> Encoded:
    height, width = image.shape[:2]
    if max_width and width > max_width:
        # INTER_AREA: the least aliasing when shrinking.
        height = round(height * max_width / width)
        width = max_width
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return Encoded(buffer.tobytes(), width, height)


def frame_header(
    camera_id: str, seq: int, captured_at: datetime, encoded: Encoded, uri: str,
    site: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``video_frame`` record describing one frame (its place from the camera)."""
    header: dict[str, Any] = {
        "kind": "video_frame",
        "schema_version": 1,
        # The camera and the capture time: a frame sent twice (a replayed file with the
        # same --start) is one frame downstream; seq restarts with each run of the source.
        "frame_id": f"{camera_id[:44]}-{int(captured_at.timestamp() * 1000)}",
        "camera_id": camera_id,
        "captured_at": captured_at.astimezone(UTC).isoformat(),
        "seq": seq,
        "uri": uri,
        "width": encoded.width,
        "height": encoded.height,
        "content_type": "image/jpeg",
    }
    header |= {k: site[k] for k in SITE_FIELDS if site.get(k) is not None}
    return header


@dataclass
class FramesReport:
    published: int = 0
    refused: list[str] = field(default_factory=list)  # why each refused frame was
    seconds: float = 0.0
    first_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.refused and self.first_error is None and self.published > 0


# (topic, key, value) -> a future with ``.get(timeout)``; kafka-python's ``send`` shape.
Send = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class FrameOptions:
    camera_id: str
    site: Mapping[str, Any]
    fps: float = 2.0
    quality: int = 85
    max_width: int | None = None
    start: datetime | None = None  # a file's first frame time (default: now)
    realtime: bool = False
    refs: bool = False  # publish references to the photos where they are
    limit: int | None = None  # stop after this many frames


def publish_frames(
    source: str,
    options: FrameOptions,
    send: Send,
    topic_name: Callable[[str], str],
    max_message_bytes: int = FRAMES_RAW.max_message_bytes,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FramesReport:
    """Read ``source`` and publish its frames; returns what was published and refused."""
    report = FramesReport()
    started = time.monotonic()
    first = options.start or clock()
    key = options.camera_id.encode()
    pending: list[Any] = []
    for seq, frame in enumerate(read_source(source, options.fps)):
        if options.limit is not None and seq >= options.limit:
            break
        if frame.image.size == 0:
            report.refused.append(f"frame {seq} ({frame.name}): not a readable image")
            continue
        if options.realtime and frame.position_s is not None:
            time.sleep(max(0.0, frame.position_s - (time.monotonic() - started)))
        captured = (first + timedelta(seconds=frame.position_s)
                    if frame.position_s is not None else clock())
        if options.refs:
            if frame.path is None:
                raise FrameSourceError(
                    "references name photos where they already are (an object store); a "
                    "video's frames would have to be written out unblurred: publish them "
                    "inline (without --refs)")
            height, width = frame.image.shape[:2]
            header = frame_header(options.camera_id, seq, captured,
                                  Encoded(b"", width, height), frame.path.resolve().as_uri(),
                                  options.site)
            pending.append(send(topic_name(VIDEO_FRAMES.name), key=key,
                                value=orjson.dumps(header)))
        else:
            encoded = encode_jpeg(frame.image, options.quality, options.max_width)
            header = frame_header(options.camera_id, seq, captured, encoded, INLINE_URI,
                                  options.site)
            value = encode_frame(header, encoded.jpeg)
            if len(value) > max_message_bytes:
                report.refused.append(
                    f"frame {seq}: {len(value):,} bytes, over {FRAMES_RAW.name}'s limit of "
                    f"{max_message_bytes:,}: use --max-width or a lower --quality, or --refs "
                    "for photos in an object store")
                continue
            pending.append(send(topic_name(FRAMES_RAW.name), key=key, value=value))
        report.published += 1
        if len(pending) >= 64:
            _confirm(pending, report)
    _confirm(pending, report)
    report.seconds = time.monotonic() - started
    return report


def _confirm(pending: list[Any], report: FramesReport) -> None:
    for future in pending:
        try:
            future.get(timeout=30)
        except Exception as exc:  # noqa: BLE001 - any delivery failure is reported, not lost
            report.first_error = report.first_error or f"{type(exc).__name__}: {exc}"
            report.published -= 1
    pending.clear()
