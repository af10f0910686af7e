"""OCR on real and rendered signs: Debian opencv-doc's scene-text photos (the NO PARKING
signs) and signs our code renders with a Chinese font (fonts-noto-cjk) onto a real street
photo; in-process onnxruntime, RapidOCR itself (the reference implementation, in a
throwaway venv), and a real tritonserver.

The module fixture runs the cached model build (``models.vision.ocr_models.build``):
about 2 s from the cached wheel, a few more when the wheel must be downloaded. The
reference venv (``.cache/ocr-reference-env``) takes about 15 s to make the first time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pipeline import checked

from infra.services import free_port
from infra.triton import _file_lock
from models.inference import FallbackBackend
from models.vision import ocr_models
from models.vision.convert import ensure_venv
from models.vision.ocr import OcrLine, classify_text
from models.vision.ocr_runner import (
    OcrReader,
    build_reader,
    in_process_reader,
    place_in_repository,
    read_image,
    triton_reader,
)
from streams import ocr_cli
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

EXAMPLES = Path("/usr/share/doc/opencv-doc/examples")
SCENES = tuple(EXAMPLES / "text" / f"scenetext0{n}.jpg" for n in range(1, 7))
STREET = EXAMPLES / "data" / "building.jpg"
# The sign on scenetext01.jpg, line by line, and where it stands (x1, y1, x2, y2).
NO_PARKING_SIGN = ["NOTICE", "DOUBLE", "PARKING", "PROHIBITED", "AT ALL TIMES"]
SIGN_AREA = (255, 15, 450, 265)

# RapidOCR 3.10 and every dependency it pulled here, for its reference runs.
REFERENCE_PINS = (
    "rapidocr==3.10.0", "onnxruntime==1.32.0", "numpy==2.4.6",
    "opencv-python-headless==4.14.0.94", "pyclipper==1.4.0", "shapely==2.2.0",
    "omegaconf==2.4.0", "PyYAML==6.0.4", "pillow==13.0.0", "six==1.17.0", "tqdm==4.70.1",
    "requests==2.34.2", "colorlog==6.12.0",
)  # fmt: skip
REFERENCE_ENV = REPO_ROOT / ".cache" / "ocr-reference-env"


def texts(lines: list[OcrLine]) -> list[str]:
    return [line.text for line in lines]


def assert_same_lines(got: list[OcrLine], want: list[OcrLine], where: str, px: float = 1.0,
                      score: float = 1e-3) -> None:  # fmt: skip
    """The same texts in the same order, corners within ``px``, scores within ``score``."""
    assert texts(got) == texts(want), where
    for g, w in zip(got, want, strict=True):
        assert np.abs(np.array(g.box) - np.array(w.box)).max() <= px, (where, g, w)
        assert abs(g.score - w.score) <= score, (where, g, w)


# ------------------------------------------------------------------------ rendered signs


def chinese_font(size: int) -> ImageFont.FreeTypeFont:
    """The system's Simplified Chinese font (fonts-noto-cjk: Noto Sans CJK SC)."""
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}|%{index}", ":lang=zh-cn"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"fc-match failed ({exc}): install fontconfig and fonts-noto-cjk")
    path, _, index = found.partition("|")
    if "CJK" not in path and "wqy" not in path.lower():
        pytest.fail(f"no Chinese font (fc-match gave {path!r}): make system-deps (fonts-noto-cjk)")
    return ImageFont.truetype(path, size, index=int(index or 0))


def render(lines: list[str], size: tuple[int, int], paper: tuple[int, int, int],
           ink: tuple[int, int, int], font_size: int) -> np.ndarray:  # fmt: skip
    """Text on a plain board, as BGR."""
    board = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(board)
    font = chinese_font(font_size)
    for n, text in enumerate(lines):
        draw.text((20, 15 + int(n * font_size * 1.4)), text, font=font, fill=ink)
    return cv2.cvtColor(np.array(board), cv2.COLOR_RGB2BGR)


def put_up(scene: np.ndarray, board: np.ndarray, at: tuple[int, int], angle: float) -> np.ndarray:
    """The board stuck on the scene at ``at``, turned by ``angle`` degrees."""
    h, w = board.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    turned = cv2.warpAffine(board, turn, (w, h))
    mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), turn, (w, h)) > 0
    out = scene.copy()
    x, y = at
    out[y : y + h, x : x + w][mask] = turned[mask]
    return out


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three signs on a real street photo, written as PNG (the reference reads files):
    a small ad slip (slightly turned, camera noise and blur), a red opening banner, and a
    government hall's sign with its phone number (a decoy: 办证大厅 is not 办证)."""
    street = cv2.imread(str(STREET))
    if street is None:
        pytest.fail(f"{STREET} is missing: install Debian's opencv-doc (make system-deps)")
    slip = render(["办证 刻章", "13912345678"], (330, 150), (245, 245, 240), (20, 20, 20), 40)
    ad = put_up(street, slip, (60, 80), 4.0)
    noise = np.random.default_rng(1).normal(0, 6, ad.shape)
    ad = cv2.GaussianBlur(np.clip(ad + noise, 0, 255).astype(np.uint8), (3, 3), 0)
    cloth = render(["热烈庆祝本店盛大开业 全场八折优惠"], (760, 80), (30, 30, 200),
                   (255, 255, 255), 44)  # fmt: skip
    banner = put_up(street, cloth, (20, 300), -2.0)
    board = render(["政务服务中心 办证大厅", "咨询电话 0532-88886666"], (520, 140),
                   (250, 250, 250), (160, 20, 20), 40)  # fmt: skip
    hall = put_up(street, board, (150, 60), 0.0)
    folder = tmp_path_factory.mktemp("signs")
    written = {}
    for name, image in (("small_ad", ad), ("banner", banner), ("hall", hall)):
        written[name] = folder / f"{name}.png"
        cv2.imwrite(str(written[name]), image)
    return written


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def vision_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Triton model repository with ocr_det and ocr_rec (cached build)."""
    paths = ocr_models.build(log=lambda line: print(f"[ocr] {line}"))
    repository = tmp_path_factory.mktemp("ocr") / "repository"
    place_in_repository(repository, paths)
    return repository


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    missing = [str(p) for p in SCENES if not p.is_file()]
    if missing:
        pytest.fail(f"{missing} missing: install Debian's opencv-doc (make system-deps)")
    return {p.name: read_image(p) for p in SCENES}


@pytest.fixture(scope="module")
def local(vision_repository: Path) -> Iterator[OcrReader]:
    yield from checked(in_process_reader(vision_repository))


def reference_python() -> Path:
    """The throwaway venv with RapidOCR (made once; a stamp records the pins). pip takes
    the rapidocr wheel from our build's cache when it is there."""
    with _file_lock(REFERENCE_ENV.with_suffix(".lock")):  # several test sessions at once
        return ensure_venv(
            REFERENCE_ENV, REFERENCE_PINS, "RapidOCR reference", print,
            pip_args=("--find-links", str(ocr_models.Paths().cache)),
        )  # fmt: skip


@pytest.fixture(scope="module")
def reference(signs: dict[str, Path], scenes: dict[str, np.ndarray]) -> dict[str, list[OcrLine]]:
    """RapidOCR's own lines on every scene and sign, by file name."""
    paths = [*map(str, SCENES), *map(str, signs.values())]
    script = Path(__file__).with_name("ocr_reference.py")
    run = subprocess.run([str(reference_python()), str(script), *paths],
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    return {
        Path(path).name: [OcrLine(a["text"], tuple(map(tuple, a["box"])), a["score"])
                          for a in lines]
        for path, lines in answers.items()
    }  # fmt: skip


# ------------------------------------------------------------------------- what it reads


def test_it_reads_the_real_no_parking_sign(local: OcrReader, scenes: dict[str, np.ndarray]):
    lines = local.read(scenes["scenetext01.jpg"])
    assert texts(lines)[:5] == NO_PARKING_SIGN
    for line in lines[:5]:
        xs, ys = zip(*line.box, strict=True)
        x1, y1, x2, y2 = SIGN_AREA
        assert x1 <= min(xs) and max(xs) <= x2 and y1 <= min(ys) and max(ys) <= y2, line
        assert line.score > 0.95
    assert classify_text(lines)[:2] == (False, False)


def test_it_reads_both_no_parking_signs_on_scenetext05(
    local: OcrReader, scenes: dict[str, np.ndarray]
):
    lines = local.read(scenes["scenetext05.jpg"])
    assert texts(lines) == ["NOPARKING", "NOPARKING"]
    # The two signs, the far one small at the left, the near one large at the right.
    assert lines[0].box[0][0] < 150 < 400 < lines[1].box[0][0]


def test_a_rendered_small_ad_is_read_and_classified(local: OcrReader, signs: dict[str, Path]):
    lines = local.read(read_image(signs["small_ad"]))
    assert texts(lines) == ["办证刻章", "13912345678"]
    small_ad, banner, evidence = classify_text(lines)
    assert small_ad and not banner
    assert "phone 139****5678" in evidence and "ad word 办证 (3)" in evidence


def test_a_rendered_banner_is_read_and_classified(local: OcrReader, signs: dict[str, Path]):
    lines = local.read(read_image(signs["banner"]))
    assert texts(lines) == ["热烈庆祝本店盛大开业全场八折优惠"]
    assert classify_text(lines)[:2] == (False, True)


def test_a_service_halls_sign_is_neither(local: OcrReader, signs: dict[str, Path]):
    lines = local.read(read_image(signs["hall"]))
    joined = "".join(texts(lines))
    assert "办证大厅" in joined and "0532-88886666" in joined.replace(" ", "")
    assert classify_text(lines)[:2] == (False, False)


def test_several_images_at_once_read_as_one_by_one(
    local: OcrReader, scenes: dict[str, np.ndarray], signs: dict[str, Path]
):
    images = [scenes["scenetext01.jpg"], read_image(signs["small_ad"]), scenes["scenetext02.jpg"]]
    together = local.read_many(images)
    for n, image in enumerate(images):
        assert together[n] == local.read(image), f"image {n}"  # exactly: no cross-image batches


def test_same_lines_as_rapidocr_itself(
    local: OcrReader,
    reference: dict[str, list[OcrLine]],
    scenes: dict[str, np.ndarray],
    signs: dict[str, Path],
):
    """Our pre- and post-processing (numpy + cv2) against RapidOCR's (shapely, pyclipper)
    on the same model files: the same texts; boxes and scores as close as rounding."""
    images = {**scenes, **{p.name: read_image(p) for p in signs.values()}}
    assert set(reference) == set(images)
    for name, image in images.items():
        assert_same_lines(local.read(image), reference[name], name, px=2, score=2e-3)


# ------------------------------------------------------------------------------ Triton


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_reads_the_same_lines_as_in_process(
    local: OcrReader,
    vision_triton,
    protocol: str,
    scenes: dict[str, np.ndarray],
    signs: dict[str, Path],
):
    url = vision_triton.grpc_url if protocol == "grpc" else vision_triton.http_url
    served = triton_reader(url, protocol)
    try:
        served.check()
        images = [scenes["scenetext01.jpg"], *(read_image(p) for p in signs.values())]
        for n, (remote, here) in enumerate(
            zip(served.read_many(images), local.read_many(images), strict=True)
        ):
            assert_same_lines(remote, here, f"image {n} via {protocol}")
        assert texts(served.read(scenes["scenetext01.jpg"]))[:5] == NO_PARKING_SIGN
    finally:
        served.close()


def test_triton_batches_concurrent_cameras(
    local: OcrReader, vision_triton, signs: dict[str, Path]
):
    """Four cameras send a frame of the same size at once: the detector runs fewer
    executions than requests, and every camera gets its own frame's lines."""
    frames = [read_image(signs[name]) for name in ("small_ad", "banner", "hall", "small_ad")]
    want = local.read_many(frames)
    served = triton_reader(vision_triton.grpc_url)
    requests_before, executions_before = _counts(vision_triton.grpc_url, "ocr_det")
    answers: dict[int, list[OcrLine]] = {}
    start = threading.Barrier(len(frames))

    def camera(n: int) -> None:
        start.wait()
        answers[n] = served.read(frames[n])

    threads = [threading.Thread(target=camera, args=(n,)) for n in range(len(frames))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        served.close()
    assert sorted(answers) == list(range(len(frames)))
    for n in range(len(frames)):
        assert_same_lines(answers[n], want[n], f"camera {n}")
    requests_after, executions_after = _counts(vision_triton.grpc_url, "ocr_det")
    assert requests_after - requests_before == len(frames)
    assert executions_after - executions_before < len(frames)


def test_the_configured_reader_uses_triton_and_falls_back_in_process(
    local: OcrReader, vision_triton, vision_repository: Path, signs: dict[str, Path]
):
    image = read_image(signs["small_ad"])
    want = local.read(image)
    up = build_reader(
        Settings(model_repository=vision_repository, triton_url=vision_triton.grpc_url)
    )
    down = build_reader(
        Settings(model_repository=vision_repository, triton_url=f"127.0.0.1:{free_port()}")
    )
    try:
        for reader in (up, down):
            assert isinstance(reader.backend, FallbackBackend)
            reader.check()  # a Triton that is down is noted, the local models checked
            assert_same_lines(reader.read(image), want, reader.name)
        assert up.backend.fallback_count == 0
        assert down.backend.fallback_count == 2  # detection, then recognition
    finally:
        up.close()
        down.close()


def _counts(grpc_url: str, model: str) -> tuple[int, int]:
    """(successful requests, executions) of ``model`` so far, from Triton's statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        [stats] = client.get_inference_statistics(model, as_json=True)["model_stats"]
    finally:
        client.close()
    success = stats.get("inference_stats", {}).get("success", {})
    return int(success.get("count", 0)), int(stats.get("execution_count", 0))


# -------------------------------------------------------------------------- batch tool


@pytest.mark.parametrize("via", ["onnx", "triton"])
def test_the_ocr_command_over_a_folder(
    via: str,
    vision_repository: Path,
    vision_triton,
    signs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in signs.values():
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    monkeypatch.setenv("CITYSTREAM_MODEL_REPOSITORY", str(vision_repository))
    out = tmp_path / "ocr.jsonl"
    route = ["--via", "triton", "--triton-url", vision_triton.grpc_url] if via == "triton" else []
    assert ocr_cli.main(["--input", str(folder), "--output", str(out), *route]) == 0
    answers = {Path(a["source"]).stem: a for a in map(json.loads, out.read_text().splitlines())}
    assert sorted(answers) == ["banner", "hall", "small_ad"]
    assert set(answers["small_ad"]) == {"source", "lines", "small_ad", "banner"}
    assert [ln["text"] for ln in answers["small_ad"]["lines"]] == ["办证刻章", "13912345678"]
    assert set(answers["small_ad"]["lines"][0]) == {"text", "box", "score"}
    assert len(answers["small_ad"]["lines"][0]["box"]) == 4
    flags = {name: (a["small_ad"], a["banner"]) for name, a in answers.items()}
    assert flags == {"small_ad": (True, False), "banner": (False, True), "hall": (False, False)}
    [reject] = map(json.loads, Path(f"{out}.rejects.jsonl").read_text().splitlines())
    assert "broken.jpg is not an image" in reject["reason"]
    assert "citystream ocr: 3 processed, 1 rejected" in capsys.readouterr().err


def test_the_ocr_command_without_models_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("CITYSTREAM_MODEL_REPOSITORY", str(tmp_path / "empty"))
    assert ocr_cli.main(["--input", str(SCENES[0]), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "python -m models.vision.ocr_models" in capsys.readouterr().err
