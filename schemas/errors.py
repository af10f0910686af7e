"""Typed errors for records that cannot be processed: errors are data."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ErrorKind(StrEnum):
    OVERSIZE = "oversize"
    EMPTY = "empty"
    UNDECODABLE = "undecodable"  # not UTF-8
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_KIND = "unknown_kind"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_FIELD = "invalid_field"
    WRONG_TOPIC = "wrong_topic"
    UNKNOWN_PLACE = "unknown_place"
    UNKNOWN_CODE = "unknown_code"
    # A bug in a processor, not in the message: dead-lettered so one poison message
    # cannot stall its partition, and replayable once the bug is fixed.
    PROCESSING_ERROR = "processing_error"


class RecordError(ValueError):
    """A record that cannot be processed, with a machine-readable kind and a human reason."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, with where it came from and why.

    Published to the dead-letter topic and stored in ClickHouse; the original bytes
    travel along (base64) so the message can be repaired and replayed.
    """

    source_topic: str
    source_partition: int
    source_offset: int
    error_kind: ErrorKind
    reason: str
    original: bytes
    key: bytes | None
    failed_at: datetime
    processor: str

    def to_wire(self) -> dict[str, object]:
        return {
            "kind": "dead_letter",
            "schema_version": 1,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "error_kind": str(self.error_kind),
            "reason": self.reason,
            "original_b64": base64.b64encode(self.original).decode("ascii"),
            "key_b64": None if self.key is None else base64.b64encode(self.key).decode("ascii"),
            "failed_at": self.failed_at.isoformat(),
            "processor": self.processor,
        }
