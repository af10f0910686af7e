"""``citystream detect``'s frame: images, folders and videos in; one line per image or
sampled frame, in order; unreadable images rejected with the reason (a scripted
detector: the models have their own tests)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.vision.nanodet import Detection
from streams.detect_cli import answer, frames_of, run_detect
from streams.frames import FrameSourceError


def _fake(images: list[np.ndarray]) -> list[list[Detection]]:
    # One "person" per image, its box the image's own size: shows which image it was.
    return [[Detection((0.0, 0.0, float(i.shape[1]), float(i.shape[0])), "person", 0.91234)]
            for i in images]


def _run(path: Path, fps: float = 2.0, batch: int = 3) -> tuple[list[dict], list[dict], object]:
    sink, rejects = io.StringIO(), io.StringIO()
    summary = run_detect(frames_of(path, fps), _fake, lambda c: "D03" if c == "car" else None,
                         sink, rejects, progress=io.StringIO(), batch=batch)
    return ([json.loads(x) for x in sink.getvalue().splitlines()],
            [json.loads(x) for x in rejects.getvalue().splitlines()], summary)


def test_a_folder_in_name_order_with_an_unreadable_image(tmp_path: Path) -> None:
    for name, width in (("b.png", 30), ("a.jpg", 20), ("d.jpg", 40)):
        cv2.imwrite(str(tmp_path / name), np.zeros((10, width, 3), np.uint8))
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 binary, not an image")
    (tmp_path / "notes.txt").write_text("skipped: not an image file")
    out, rejects, summary = _run(tmp_path)
    assert [Path(o["source"]).name for o in out] == ["a.jpg", "b.png", "d.jpg"]
    assert [o["detections"][0]["box"] for o in out] == [
        [0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 30.0, 10.0], [0.0, 0.0, 40.0, 10.0]]
    assert out[0]["detections"][0] == {"box": [0.0, 0.0, 20.0, 10.0], "class": "person",
                                       "code": None, "score": 0.9123}
    assert [(Path(r["source"]).name, r["reason"]) for r in rejects] == [
        ("c.jpg", "not a readable image")]
    assert (summary.processed, summary.rejected, summary.exit_code(False),
            summary.exit_code(True)) == (3, 1, 0, 1)


def test_a_video_is_sampled_with_frame_indices(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(25):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    out, rejects, _ = _run(video, fps=2)
    assert [o["frame"] for o in out] == [0, 5, 10, 15, 20] and rejects == []


def test_answers_carry_codes_and_rounded_numbers() -> None:
    got = answer("x.jpg", 7, [Detection((1.04, 2.06, 3.0, 4.0), "car", 0.123456)],
                 lambda c: "D03" if c == "car" else None)
    assert got == {"source": "x.jpg", "frame": 7, "detections": [
        {"box": [1.0, 2.1, 3.0, 4.0], "class": "car", "code": "D03", "score": 0.1235}]}


def test_a_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FrameSourceError, match="does not exist"):
        list(frames_of(tmp_path / "nope.mp4", 2.0))
