"""``citystream detect``: the vision stage's detector over an image, a folder of images or
a video file, offline.

The same detector and decoding the live stage runs (``models.vision.detector``: NanoDet,
in-process or ``--via triton``), or an operator's own ONNX detector described by a
configuration file (``--detector``, ``models.vision.detector_config``). One output line
per image or sampled frame, in order::

    {"source", "frame", "detections": [{"box": [x1, y1, x2, y2], "class", "code", "score"}]}

boxes in the original image's pixels. A video is sampled at ``--fps`` (``frame`` is the
frame's index in the video); a folder's images are read in name order (``frame`` 0). An
image that cannot be read is a reject with its path and the reason; the run goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from streams.batch import Progress, Summary
from streams.batch_cli import add_batch_command, run_driver_command
from streams.settings import Settings

COMMAND = "detect"
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")
BATCH = 8
EXAMPLE_OUT = {
    "source": "bus.jpg", "frame": 0,
    "detections": [
        {"box": [55.7, 386.5, 226.8, 895.7], "class": "person", "code": None, "score": 0.829},
        {"box": [19.6, 213.6, 789.8, 750.8], "class": "bus", "code": None, "score": 0.7751},
    ],
}  # fmt: skip
NOTE = """\
--input: an image, a folder of images (.jpg .jpeg .png .bmp .webp, name order) or a video
file (sampled at --fps; "frame" is the index in the video). Boxes are in the original
image's pixels; "code" is the event code the class means under the detector's
configuration (none for the COCO classes). --detector CONFIG: an operator's own ONNX
detector by configuration alone (model path, input size and normalisation, output format
nanodet / yolov8 / yolov5, class names, class-to-code mapping); see
models/vision/detectors/*.json. An unreadable image is rejected with the reason."""

# (images) -> detections per image; each with box, class_name, score.
Detect = Callable[[list[Any]], list[list[Any]]]


def register(subparsers: Any) -> None:
    p = add_batch_command(
        subparsers, COMMAND, "objects on images or video frames, as the vision stage sees them",
        [([], [EXAMPLE_OUT])], "For `citystream detect --input bus.jpg --output -`.\n" + NOTE,
        models=True,
    )
    p.add_argument("--detector", default=None, metavar="CONFIG",
                   help="an operator's detector configuration (default: the converted NanoDet)")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second of video")


def frames_of(path: Path, fps: float) -> Iterator[tuple[str, int, Any]]:
    """(source, frame index, image or None when unreadable) for each image or frame,
    as ``citystream frames`` reads them (``streams.frames.read_source``)."""
    from streams.frames import read_source

    for frame in read_source(str(path), fps):
        image = frame.image if frame.image.size else None
        yield str(frame.path or path), frame.index, image


def answer(source: str, frame: int, found: Sequence[Any],
           code_of: Callable[[str], str | None]) -> dict[str, Any]:
    return {
        "source": source,
        "frame": frame,
        "detections": [
            {"box": [round(float(v), 1) for v in d.box], "class": d.class_name,
             "code": code_of(d.class_name), "score": round(float(d.score), 4)}
            for d in found
        ],
    }


def run_detect(
    frames: Iterator[tuple[str, int, Any]], detect: Detect,
    code_of: Callable[[str], str | None], sink: IO[str], rejects: IO[str],
    progress: IO[str] | None = None, batch: int = BATCH,
) -> Summary:
    """Detections for every readable image, in order; rejects for the others."""
    started = time.monotonic()
    summary = Summary()
    shown = Progress(progress or sys.stderr, None)
    pending: list[tuple[str, int, Any]] = []

    def flush() -> None:
        found = detect([image for _, _, image in pending]) if pending else []
        for (source, index, _), objects in zip(pending, found, strict=True):
            sink.write(json.dumps(answer(source, index, objects, code_of),
                                  ensure_ascii=False) + "\n")
            summary.processed += 1
        pending.clear()
        shown.update(summary.processed + summary.rejected, 0)

    for source, index, image in frames:
        if image is None or getattr(image, "size", 0) == 0:
            summary.rejected += 1
            rejects.write(json.dumps({"source": source, "frame": index,
                                      "reason": "not a readable image"},
                                     ensure_ascii=False) + "\n")
            continue
        pending.append((source, index, image))
        if len(pending) >= batch:
            flush()
    flush()
    shown.update(summary.processed + summary.rejected, 0, final=True)
    summary.seconds = time.monotonic() - started
    return summary


CodeOf = Callable[[str], str | None]


def build(
    args: argparse.Namespace, settings: Settings
) -> tuple[Detect, CodeOf, Callable[[], None]]:
    """(detect, class -> code, close) for the command's options."""
    if args.detector:
        from models.vision.detector_config import ConfiguredDetector, load_detector_config

        if args.via == "triton":
            raise SystemExit(f"citystream {COMMAND}: --detector runs the operator's model "
                             "in-process; --via triton serves the converted NanoDet")
        config = load_detector_config(args.detector)
        configured = ConfiguredDetector(config)
        return configured.detect, config.event_code, lambda: None
    from models.vision.detector import build_detector
    from streams.batch_cli import model_settings

    detector = build_detector(model_settings(args, settings))
    detector.check()
    return detector.detect, lambda _name: None, detector.close


def cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    from models.inference import BackendUnavailable, ModelMismatch
    from streams.frames import FrameSourceError

    try:
        detect, code_of, close = build(args, settings)
    except (FileNotFoundError, ValueError, BackendUnavailable, ModelMismatch) as exc:
        print(f"citystream {COMMAND}: no detector: {exc}", file=sys.stderr)
        return 2
    try:
        return run_driver_command(
            args, COMMAND,
            lambda _source, sink, rejects: run_detect(
                frames_of(Path(args.input), args.fps), detect, code_of, sink, rejects),
            open_input=False,
        )
    except FrameSourceError as exc:
        print(f"citystream {COMMAND}: {exc}", file=sys.stderr)
        return 2
    finally:
        close()
