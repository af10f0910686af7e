"""The batch tools' common frame: JSON Lines in, JSON Lines out, through the same
processing functions as the live agents.

Incremental (memory stays flat on any input size: lines are read and written a chunk at
a time), in input order; a line that cannot be processed goes to the rejects file with
its line number and reason and the run goes on; a progress line on a terminal (lines per
second, time left from the bytes read); a one-line summary at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 256
REJECT_INPUT_CHARS = 500


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why one input line produced no output."""

    reason: str


@dataclass(frozen=True, slots=True)
class InputLine:
    number: int  # 1-based line number in the input
    record: dict[str, Any]


# A chunk of parsed lines in, one output object or ``Rejected`` per line out, in order.
# (A process that keeps its results itself, with no sink, answers anything but Rejected.)
Process = Callable[[Sequence[InputLine]], Sequence[dict[str, Any] | Rejected]]


@dataclass
class Summary:
    processed: int = 0
    rejected: int = 0
    seconds: float = 0.0

    def line(self, command: str) -> str:
        return (f"citystream {command}: {self.processed} processed, {self.rejected} rejected, "
                f"{self.seconds:.1f} s")

    def exit_code(self, strict: bool) -> int:
        """Non-zero only when nothing could be processed, or with ``strict`` on any reject."""
        if self.rejected and (strict or not self.processed):
            return 1
        return 0


def parse_lines(
    lines: Iterable[bytes], required: Sequence[str]
) -> Iterator[tuple[int, InputLine | Rejected, bytes]]:
    """(line number, parsed line or why not, raw bytes) for each non-blank line."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            yield number, Rejected(f"not a JSON line: {exc}"), raw
            continue
        if not isinstance(record, dict):
            yield number, Rejected(f"a JSON {type(record).__name__}, not an object"), raw
            continue
        missing = [f for f in required if not isinstance(record.get(f), str)]
        if missing:
            yield number, Rejected(f"missing or not a string: {', '.join(missing)}"), raw
            continue
        yield number, InputLine(number, record), raw


def reject_line(number: int, reason: str, raw: bytes) -> dict[str, Any]:
    return {
        "line": number,
        "reason": reason,
        "input": raw.decode("utf-8", "replace").rstrip("\r\n")[:REJECT_INPUT_CHARS],
    }


class Progress:
    """A progress line on a terminal (``stream.isatty()``), nothing otherwise."""

    def __init__(self, stream: IO[str], total_bytes: int | None, every_s: float = 0.5) -> None:
        self._stream = stream
        self._on = stream.isatty()
        self._total = total_bytes
        self._every = every_s
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, lines: int, bytes_read: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self._on or (not final and now - self._shown < self._every):
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-6)
        text = f"{lines:,} lines, {lines / elapsed:,.0f}/s"
        if self._total and bytes_read:
            left = elapsed * (self._total - bytes_read) / bytes_read
            text += f", {100 * bytes_read / self._total:.0f}%, about {left:.0f} s left"
        self._stream.write("\r" + text.ljust(60) + ("\n" if final else ""))
        self._stream.flush()


def run_batch(
    source: IO[bytes],
    sink: IO[str] | None,
    rejects: IO[str],
    process: Process,
    required: Sequence[str],
    *,
    progress: IO[str] | None = None,
    chunk: int = CHUNK,
) -> Summary:
    """Run ``process`` over ``source`` a chunk at a time; outputs to ``sink`` in input order
    (None: the process keeps its results itself), rejects (with line number, reason and
    the start of the line) to ``rejects``."""
    started = time.monotonic()
    summary = Summary()
    total = input_size(source)
    shown = Progress(progress or sys.stderr, total)
    read = 0
    pending: list[tuple[int, InputLine | Rejected, bytes]] = []

    def lines() -> Iterator[bytes]:
        nonlocal read
        for raw in source:
            read += len(raw)
            yield raw

    def flush() -> None:
        good = [item for _, item, _ in pending if isinstance(item, InputLine)]
        results = iter(process(good)) if good else iter(())
        for number, item, raw in pending:
            result = next(results) if isinstance(item, InputLine) else item
            if isinstance(result, Rejected):
                summary.rejected += 1
                rejects.write(json.dumps(reject_line(number, result.reason, raw),
                                         ensure_ascii=False) + "\n")
            else:
                summary.processed += 1
                if sink is not None:
                        sink.write(json.dumps(result, ensure_ascii=False) + "\n")
        pending.clear()
        shown.update(summary.processed + summary.rejected, read)

    for entry in parse_lines(lines(), required):
        pending.append(entry)
        if len(pending) >= chunk:
            flush()
    flush()
    shown.update(summary.processed + summary.rejected, read, final=True)
    summary.seconds = time.monotonic() - started
    return summary


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON Lines file this project wrote (an eval's truth, a command's
    output), one at a time; blank lines skipped."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def input_size(source: IO[bytes]) -> int | None:
    try:
        return os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None
