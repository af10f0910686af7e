"""What every batch command shares on the command line: ``--input``/``--output``/
``--rejects``/``--strict``, the model route (``--via onnx|triton``), and running a
``streams.batch`` process over the files with the summary line on stderr."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from streams.batch import Process, Summary, run_batch
from streams.settings import Settings

# A batch asks for up to a few hundred rows per request: the live agent's 0.5 s budget
# (which then falls back) is not what a file run wants from a busy server.
BATCH_TRITON_TIMEOUT_S = 30.0


def add_batch_command(
    sub: Any,
    name: str,
    summary: str,
    examples: Sequence[tuple[Sequence[Mapping[str, object]], Sequence[Mapping[str, object]]]],
    note: str,
    *,
    models: bool = False,
) -> argparse.ArgumentParser:
    """A batch subcommand whose ``--help`` shows its formats by example: input lines and
    the output lines they give, then ``note``."""
    shown: list[str] = []
    for given, answered in examples:
        shown += [f"{'In: ' if i == 0 else '    '} {json.dumps(x, ensure_ascii=False)}"
                  for i, x in enumerate(given)]
        shown += [f"{'Out:' if i == 0 else '    '} {json.dumps(x, ensure_ascii=False)}"
                  for i, x in enumerate(answered)]
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description="\n".join([*shown, note]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_batch_arguments(p, models=models)
    return p


def add_batch_arguments(p: argparse.ArgumentParser, *, models: bool = False) -> None:
    p.add_argument("--input", required=True, help="JSON Lines, UTF-8 (- for stdin)")
    p.add_argument("--output", required=True, help="JSON Lines (- for stdout)")
    p.add_argument("--rejects", default=None,
                   help="lines that could not be processed, with line number and reason "
                   "(default: OUT.rejects.jsonl)")
    p.add_argument("--strict", action="store_true",
                   help="exit non-zero on any rejected line (default: only when none passed)")
    if models:
        p.add_argument("--via", choices=("onnx", "triton"), default="onnx",
                       help="onnx: the models in-process (ONNX Runtime, the default); "
                       "triton: through a running Triton server, no fallback")
        p.add_argument("--triton-url", default=None,
                       help="Triton host:port for --via triton (default: "
                       "CITYSTREAM_TRITON_URL, else 127.0.0.1:8001)")


def model_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings a batch command builds its models from: in-process for ``--via onnx``;
    for ``--via triton`` that server only (a failure is an error, not a quiet switch to
    the in-process models), with a batch-sized timeout."""
    if args.via == "onnx":
        return settings.model_copy(update={"triton_url": None})
    url = args.triton_url or settings.triton_url or "127.0.0.1:8001"
    return settings.model_copy(update={
        "triton_url": url,
        "triton_fallback": False,
        "triton_timeout_s": max(settings.triton_timeout_s, BATCH_TRITON_TIMEOUT_S),
    })


class _OpenedOnWrite(io.TextIOBase):
    """The rejects file, created at the first reject (a clean run leaves none behind; a
    stale one from an earlier run is removed, so what is there is this run's)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[str] | None = None
        path.unlink(missing_ok=True)

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = self._path.open("w", encoding="utf-8")
        return self._file.write(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


# The run over opened files: (source, sink, rejects) -> Summary.
Driver = Callable[[IO[bytes], IO[str], IO[str]], Summary]


def run_batch_command(
    args: argparse.Namespace, command: str, process: Process, required: Sequence[str]
) -> int:
    """``process`` over ``--input`` into ``--output`` in the ``streams.batch`` frame."""
    return run_driver_command(
        args, command,
        lambda source, sink, rejects: run_batch(source, sink, rejects, process, required),
    )


def run_driver_command(
    args: argparse.Namespace, command: str, driver: Driver, *, open_input: bool = True
) -> int:
    """``driver`` over ``--input`` into ``--output``; rejects to ``--rejects`` (default
    ``OUT.rejects.jsonl``; to stderr, as JSON lines, when the output is stdout); the
    summary line on stderr. Returns the exit code."""
    from models.inference import BackendUnavailable, InferenceError, ModelMismatch

    rejects_path = args.rejects or (None if args.output == "-" else f"{args.output}.rejects.jsonl")
    try:
        with contextlib.ExitStack() as files:
            # open_input False: the driver reads --input itself (a folder, a video).
            source = (io.BytesIO() if not open_input else sys.stdin.buffer
                      if args.input == "-" else files.enter_context(open(args.input, "rb")))
            sink = sys.stdout if args.output == "-" else files.enter_context(
                open(args.output, "w", encoding="utf-8"))
            rejects = sys.stderr if rejects_path is None else files.enter_context(
                _OpenedOnWrite(Path(rejects_path)))
            summary = driver(source, sink, rejects)
    except (BackendUnavailable, InferenceError, ModelMismatch) as exc:
        # The model server went away mid-run (--via triton has no fallback): what was
        # written so far stands, in order; the run is not complete.
        print(f"citystream {command}: stopped, the models did not answer: {exc}",
              file=sys.stderr)
        return 1
    where = f" (rejects: {rejects_path})" if summary.rejected and rejects_path else ""
    print(summary.line(command) + where, file=sys.stderr)
    return summary.exit_code(args.strict)
