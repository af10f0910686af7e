"""``citystream mask`` and ``citystream analyse``: the live ingest's masking and appeal
analysis over JSON Lines (pure: records in, output objects or reasons out)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from processors.appeal_analysis import analyse
from processors.ingest import normalise_text
from processors.pii import find_pii, mask
from schemas.domain import Domain
from schemas.errors import RecordError
from streams.batch import InputLine, Rejected

MASK_FIELDS = ("id", "text")
ANALYSE_FIELDS = ("id", "text")
MAX_TEXT_CHARS = 100_000


def _each(
    lines: Sequence[InputLine],
    max_chars: int,
    build: Callable[[InputLine, str], dict[str, Any]],
) -> list[dict[str, Any] | Rejected]:
    """``build(line, text)`` for each line whose text ingest would take (normalised, within
    the limit, not empty); ingest's reason for the others."""
    out: list[dict[str, Any] | Rejected] = []
    for line in lines:
        try:
            text = normalise_text(line.record["text"], max_chars, "text")
        except RecordError as err:
            out.append(Rejected(err.reason))
            continue
        out.append(build(line, text))
    return out


def mask_lines(
    lines: Sequence[InputLine], max_chars: int = MAX_TEXT_CHARS
) -> list[dict[str, Any] | Rejected]:
    """``{"id", "text", "spans"}``: the text as ingest stores it (normalised, masked), and
    where the personal data is in the text as given (the masker maps its folded view
    back to the original characters)."""

    def build(line: InputLine, text: str) -> dict[str, Any]:
        spans = find_pii(line.record["text"])
        return {
            "id": line.record["id"],
            "text": mask(text).text,
            "spans": [{"type": s.type, "start": s.start, "end": s.end} for s in spans],
        }

    return _each(lines, max_chars, build)


def analyse_lines(
    lines: Sequence[InputLine], domain: Domain, max_chars: int = MAX_TEXT_CHARS
) -> list[dict[str, Any] | Rejected]:
    """``{"id", "urgency", "sentiment", "repeat_complaint", "flags"}`` as ingest stores them
    for an appeal (masked text, no event code: the text decides)."""

    def build(line: InputLine, text: str) -> dict[str, Any]:
        channel = line.record.get("channel")
        result = analyse(mask(text).text, channel if isinstance(channel, str) else None, None,
                         domain)
        return {
            "id": line.record["id"],
            "urgency": result.urgency,
            "sentiment": result.sentiment,
            "repeat_complaint": result.repeat_complaint,
            "flags": list(result.flags),
        }

    return _each(lines, max_chars, build)
