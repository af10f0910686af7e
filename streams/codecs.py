"""JSON codecs for the wire: bytes in, a typed record or a ``RecordError`` out."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.errors import ErrorKind, RecordError


def decode_json(value: bytes | None, max_bytes: int) -> Any:
    """Decode one message value; every way it can be wrong is a ``RecordError``."""
    if not value:
        raise RecordError(ErrorKind.EMPTY, "message has no value")
    if len(value) > max_bytes:
        raise RecordError(
            ErrorKind.OVERSIZE, f"message is {len(value)} bytes, the limit is {max_bytes}"
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            ErrorKind.UNDECODABLE, f"not UTF-8 at byte {exc.start}: {exc.reason}"
        ) from exc
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RecordError(ErrorKind.MALFORMED_JSON, f"not valid JSON: {exc}") from exc


def encode_json(obj: Any) -> bytes:
    return orjson.dumps(obj)


# ---- frames.raw: a frame's description and its JPEG in one message -------------------------
# ``CSF1`` | header length (4 bytes, big-endian) | header (a ``video_frame`` record, JSON,
# uri ``inline``) | the JPEG. One self-contained value rather than Kafka headers: it
# survives every tool that copies values (replay, dead letters, mirror makers).
FRAME_MAGIC = b"CSF1"
INLINE_URI = "inline"
_JPEG_START = b"\xff\xd8"
_MAX_HEADER_BYTES = 64 * 1024


def encode_frame(header: dict[str, Any], jpeg: bytes) -> bytes:
    """A ``frames.raw`` value: ``header`` is a ``video_frame`` record whose uri is
    ``inline`` (the bytes follow)."""
    if header.get("uri") != INLINE_URI:
        raise ValueError(f"an inline frame's uri must be {INLINE_URI!r}")
    head = orjson.dumps(header)
    return FRAME_MAGIC + len(head).to_bytes(4, "big") + head + jpeg


def decode_frame(value: bytes | None, max_bytes: int) -> tuple[Any, bytes]:
    """(the header as decoded JSON, the JPEG bytes) of a ``frames.raw`` value; every way
    it can be wrong is a ``RecordError`` (the header is validated as a record by the
    caller, as any other record)."""
    if not value:
        raise RecordError(ErrorKind.EMPTY, "message has no value")
    if len(value) > max_bytes:
        raise RecordError(
            ErrorKind.OVERSIZE, f"frame message is {len(value)} bytes, the limit is {max_bytes}"
        )
    if not value.startswith(FRAME_MAGIC) or len(value) < len(FRAME_MAGIC) + 4:
        raise RecordError(ErrorKind.MALFORMED_JSON,
                          "not a frame message (no CSF1 envelope): frames.raw takes "
                          "`citystream frames` output")
    size = int.from_bytes(value[4:8], "big")
    if size > min(_MAX_HEADER_BYTES, len(value) - 8):
        raise RecordError(ErrorKind.MALFORMED_JSON,
                          f"frame header says {size} bytes, the message holds {len(value) - 8}")
    header = decode_json(value[8 : 8 + size], _MAX_HEADER_BYTES)
    jpeg = value[8 + size :]
    if not jpeg.startswith(_JPEG_START):
        raise RecordError(ErrorKind.INVALID_FIELD, "frame image: not a JPEG (no FFD8 start)")
    if isinstance(header, dict) and header.get("uri") != INLINE_URI:
        raise RecordError(ErrorKind.INVALID_FIELD,
                          f"frame header uri must be {INLINE_URI!r} on frames.raw")
    return header, jpeg
