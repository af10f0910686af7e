"""``citystream bench-vision``: the detector and OCR on this machine, in-process against
a real ``tritonserver``, at batch sizes 1, 4 and 16, side by side in one run.

Detector: frames of ``vtest.avi`` (real footage, 768×576) in batches of N per call;
OCR: street and sign photos (``scenetext*.jpg``), N images per call. For each: frames
(images) per second over the run, and the per-frame latency (the call that carried the
frame, from the images to the detections) p50/p99. The same models and code as the
vision stage (``models.vision.detector``, ``models.vision.ocr_runner``). The machine may
be shared and noisy: read the ratios of one run.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SIGNS = Path("/usr/share/doc/opencv-doc/examples/text")
BATCH_SIZES = (1, 4, 16)


def vtest_frames(count: int) -> list[np.ndarray]:
    from streams.frames import read_source

    frames = [f.image for f in read_source(str(VTEST), 1.0)]
    return (frames * (count // len(frames) + 1))[:count]


def sign_photos(count: int) -> list[np.ndarray]:
    photos = [cv2.imread(str(p)) for p in sorted(SIGNS.glob("scenetext*.jpg"))]
    photos = [p for p in photos if p is not None]
    return (photos * (count // len(photos) + 1))[:count]


def measure(run: Callable[[list[Any]], Any], images: Sequence[Any], batch: int) -> dict[str, Any]:
    """Warm up with one batch, then every image once in batches of ``batch``."""
    run(list(images[:batch]))
    latencies: list[float] = []
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        t0 = time.perf_counter()
        run(chunk)
        latencies += [1000 * (time.perf_counter() - t0)] * len(chunk)
    seconds = time.perf_counter() - started
    arr = np.asarray(latencies)
    return {
        "batch": batch,
        "images": len(images),
        "per_second": round(len(images) / seconds, 2),
        "latency_ms_p50": round(float(np.percentile(arr, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(arr, 99)), 1),
    }


def bench(frames: int, photos: int, cache_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from infra.services import free_ports
    from infra.triton import TritonServer
    from models.vision import convert, ocr_models
    from models.vision.detector import in_process_detector, place_in_repository, triton_detector
    from models.vision.ocr_runner import in_process_reader, triton_reader
    from models.vision.ocr_runner import place_in_repository as place_ocr

    video, signs = vtest_frames(frames), sign_photos(photos)
    results: dict[str, Any] = {"detector": {}, "ocr": {}}
    with tempfile.TemporaryDirectory(prefix="citystream-bench-vision-") as scratch:
        repository = Path(scratch) / "repository"
        place_in_repository(repository, convert.build(log=log))
        ocr_models.build(log=log)
        place_ocr(repository)
        ports = free_ports(3)
        triton = TritonServer(Path(scratch) / "triton", repository, *ports, cache_dir)
        triton.start(timeout_s=300)
        try:
            routes = {
                "in-process": (in_process_detector(repository), in_process_reader(repository)),
                "triton": (triton_detector(triton.grpc_url), triton_reader(triton.grpc_url)),
            }
            for route, (detector, reader) in routes.items():
                detector.check()
                for batch in BATCH_SIZES:
                    figures = measure(detector.detect, video, batch)
                    results["detector"].setdefault(route, []).append(figures)
                    log(f"detector {route} batch {batch}: {figures}")
                    figures = measure(reader.read_many, signs, batch)
                    results["ocr"].setdefault(route, []).append(figures)
                    log(f"ocr {route} batch {batch}: {figures}")
                detector.close()
                reader.close()
        finally:
            triton.stop()
    return {
        "benchmark": "vision: detector and OCR, in-process and through Triton, batches 1/4/16",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_before": os.getloadavg()},
        "inputs": {"detector": f"{frames} frames of {VTEST.name} (768×576)",
                   "ocr": f"{photos} sign photos ({SIGNS}/scenetext*.jpg)"},
        **results,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["| model | route | batch | per second | latency p50 ms | latency p99 ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model in ("detector", "ocr"):
        for route, rows in report[model].items():
            for r in rows:
                lines.append(f"| {model} | {route} | {r['batch']} | {r['per_second']:.1f} | "
                             f"{r['latency_ms_p50']:.0f} | {r['latency_ms_p99']:.0f} |")
    return "\n".join(lines) + "\n"


def main(output: Path, frames: int, photos: int, cache_dir: Path) -> int:
    report = bench(frames, photos, cache_dir, lambda line: print(line, file=sys.stderr))
    from streams.bench import write_bench_report

    write_bench_report(output, report, markdown(report))
    return 0
