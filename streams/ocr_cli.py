"""``citystream ocr``: the text on images, read by PP-OCR (``models.vision.ocr_runner``)
and classified as the vision agent classifies it (small ad B01, banner B02).

``--input`` is JSON Lines of ``{"source": image path}`` in the ``streams.batch`` frame,
or, for convenience, one image file or a directory of images (its image files, sorted
by name), turned into such lines. Standalone: ``python -m streams.ocr_cli``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streams.batch import InputLine, Rejected
from streams.batch_cli import add_batch_command, model_settings, run_batch_command
from streams.settings import Settings

if TYPE_CHECKING:
    from models.vision.ocr_runner import OcrReader

COMMAND = "ocr"
FIELDS = ("source",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EXAMPLE_IN = {"source": "photos/pole-17.jpg"}
EXAMPLE_OUT = {
    "source": "photos/pole-17.jpg",
    "lines": [
        {"text": "办证刻章", "box": [[69.0, 115.0], [251.0, 102.0], [255.0, 155.0], [74.0, 169.0]],
         "score": 0.9999},
        {"text": "13912345678", "box": [[74.0, 175.0], [329.0, 157.0], [333.0, 203.0],
                                        [77.0, 220.0]], "score": 1.0},
    ],
    "small_ad": True,
    "banner": False,
}  # fmt: skip
NOTE = """\
--input: JSON Lines as above (paths relative to the working directory; an "id" is copied
to the answer), or one image file, or a directory of images (.jpg .jpeg .png .bmp .webp
.tif, sorted by name). Each line of text: its box as four [x, y] points in the image's
pixels, clockwise from the text's top-left corner, and the recogniser's confidence.
small_ad: a phone number with ad wording (办证, 开锁, 贷款...) or strong wording alone;
banner: a long horizontal line of slogan or promotion wording (热烈庆祝, 开业, 酬宾...).
An image that cannot be read is rejected with the reason. Models: make models (or
python -m models.vision.ocr_models); exit 2 when they are missing."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ocr`` command to the main CLI's subparsers."""
    add_batch_command(
        subparsers, COMMAND, "read the text on images: small ads (B01), banners (B02)",
        [([EXAMPLE_IN], [EXAMPLE_OUT])], NOTE, models=True,
    )  # fmt: skip


def image_files(path: Path) -> list[Path] | None:
    """The images ``--input`` names, or None when it is a JSON Lines file (or stdin)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    return None


def ocr_lines(lines: Sequence[InputLine], reader: OcrReader) -> list[dict[str, object] | Rejected]:
    """One answer (or why not) per input line, in order."""
    from models.vision.ocr_runner import ocr_record, read_image

    answers: list[dict[str, object] | Rejected] = []
    for line in lines:
        source = str(line.record["source"])
        try:
            image = read_image(Path(source))
        except ValueError as exc:
            answers.append(Rejected(str(exc)))
            continue
        answer = ocr_record(source, reader.read(image))
        if "id" in line.record:
            answer = {"id": line.record["id"], **answer}
        answers.append(answer)
    return answers


def cmd_ocr(args: argparse.Namespace, settings: Settings) -> int:
    from models.inference import BackendUnavailable, InferenceError, ModelMismatch
    from models.vision.ocr_runner import build_reader

    try:
        reader = build_reader(model_settings(args, settings))
        reader.check()
    except (FileNotFoundError, BackendUnavailable, InferenceError, ModelMismatch) as exc:
        print(f"citystream {COMMAND}: no OCR models: {exc}", file=sys.stderr)
        return 2
    try:
        images = None if args.input == "-" else image_files(Path(args.input))
        if images is None:
            return run_batch_command(args, COMMAND, lambda ls: ocr_lines(ls, reader), FIELDS)
        if not images:
            print(f"citystream {COMMAND}: no images in {args.input}", file=sys.stderr)
            return 2
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8") as listing:
            for image in images:
                listing.write(json.dumps({"source": str(image)}, ensure_ascii=False) + "\n")
            listing.flush()
            listed = copy.copy(args)
            listed.input = listing.name
            return run_batch_command(listed, COMMAND, lambda ls: ocr_lines(ls, reader), FIELDS)
    finally:
        reader.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.ocr_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    return cmd_ocr(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
