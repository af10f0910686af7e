"""The README's picture: what the vision stage sees on a real frame.

    .venv/bin/python -m models.vision.figure [--second 30] [--output FILE]

One frame of Debian's ``vtest.avi``, run through the same models as the stage (NanoDet,
BlazeFace, in-process), redacted first (``processors.privacy``: faces, heads and plates
obscured, as every stored snapshot is), then drawn on: the camera's zones from
``infra/cameras/vtest.json`` and each detection's box, class and score. The file holds
only the redacted frame: no unblurred frame is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from streams.settings import REPO_ROOT, Settings

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
CAMERA = REPO_ROOT / "infra" / "cameras" / "vtest.json"
OUTPUT = REPO_ROOT / "models" / "vision" / "figures" / "vtest-detections.jpg"
_COLOURS = {"person": (60, 200, 60), "car": (40, 160, 255), "truck": (40, 100, 255),
            "bus": (0, 60, 255), "bicycle": (255, 180, 40), "motorcycle": (255, 120, 40)}


def frame_at(second: float) -> np.ndarray:
    capture = cv2.VideoCapture(str(VTEST))
    try:
        capture.set(cv2.CAP_PROP_POS_MSEC, second * 1000)
        ok, image = capture.read()
    finally:
        capture.release()
    if not ok:
        raise SystemExit(f"cannot read {VTEST} at {second} s: install Debian's opencv-doc")
    return image


def draw(second: float, output: Path, repository: Path) -> Path:
    from models.vision.detector import in_process_detector
    from models.vision.face_detector import in_process_face_detector
    from processors.camera_config import load_camera_config
    from processors.privacy import redact, vehicles_and_persons

    raw = frame_at(second)
    found = in_process_detector(repository).detect([raw])[0]
    faces = in_process_face_detector(repository).detect([raw])[0]
    vehicles, persons = vehicles_and_persons(found)
    picture = np.array(redact(raw, faces, vehicles, persons=persons).pixels)  # a copy to draw on
    del raw  # from here on only the redacted frame exists
    camera = load_camera_config(CAMERA)
    height, width = picture.shape[:2]
    for name, polygon in camera.zone_polygons(width, height).items():
        points = np.array(polygon, np.int32).reshape(-1, 1, 2)
        cv2.polylines(picture, [points], True, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(picture, name, tuple(points[0, 0] + (4, 16)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, (255, 255, 255), 1, cv2.LINE_AA)
    for d in found:
        x1, y1, x2, y2 = (int(round(v)) for v in d.box)
        colour = _COLOURS.get(d.class_name, (200, 200, 200))
        cv2.rectangle(picture, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(picture, f"{d.class_name} {d.score:.2f}", (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(output), picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.vision.figure")
    parser.add_argument("--second", type=float, default=30.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    print(draw(args.second, args.output, Settings().model_repository))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
