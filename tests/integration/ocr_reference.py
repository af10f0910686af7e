"""RapidOCR 3.10's own pipeline on the images named on the command line, as JSON on stdout.

Run by the Python of a throwaway venv where rapidocr is installed
(``tests/integration/test_vision_ocr.py`` makes it under ``.cache/``); never imported by
our code, which does its own pre- and post-processing (``models.vision.ocr``). The models
are the wheel's own files, the same bytes (sha256-pinned) our build extracts.
"""

from __future__ import annotations

import json
import sys

from rapidocr import RapidOCR


def main(paths: list[str]) -> None:
    engine = RapidOCR(params={"Global.log_level": "error"})
    results = {}
    for path in paths:
        output = engine(path)
        texts = getattr(output, "txts", None) or ()
        results[path] = [
            {"text": text, "box": [[float(x), float(y)] for x, y in box], "score": float(score)}
            for text, box, score in zip(texts, output.boxes.tolist(), output.scores, strict=True)
        ]
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1:])
