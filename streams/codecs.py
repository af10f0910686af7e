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
