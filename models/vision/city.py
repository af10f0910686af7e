"""The city-class detector: NanoDet fine-tuned on composed scenes for the six city classes
the COCO model lacks, made reproducibly: ``python -m models.vision.city``
(``make models-city``).

1. Sources: background photos and video frames of Debian's ``opencv-doc`` examples and
   ``bus.jpg`` (the ``ultralytics`` wheel, as ``models.vision.convert`` fetches it); the
   CC0 textures ``gravel.png`` and ``grass.png`` of the ``scikit-image`` wheel (downloaded,
   checked by sha256, not installed). Backgrounds are split: those of the held-out set
   are never trained on.
2. Scenes (``models.vision.compose``, seeded): the objects drawn and pasted, and the
   ORIGINAL NanoDet's detections (score ≥ ``PSEUDO_THRESHOLD``) on each background as
   COCO labels, so the COCO classes are trained to stay.
3. The class conv of each level grows from 80 to 86 rows (the new rows: small random
   weights and the focal-loss prior bias, so they start near 0.01) and the head is cut out
   (``head.onnx``, no sigmoid); onnxruntime computes the frozen backbone's features and
   the original model's COCO scores (soft targets) once.
4. ``models.vision.finetune`` trains the head in the torch venv
   (``.cache/vision-train-env``, ``TRAIN_PINS``) for ``STEPS`` steps, seeded.
5. The trained weights go back into the extended ONNX graph by initializer name, so the
   file keeps NanoDet's layout (6 outputs, 86 classes, dynamic batch); onnxruntime's
   outputs on check images must match torch's (``PARITY_TOLERANCE``).
6. The held-out composed set: AP@0.5 per city class, and the COCO classes against the
   original model (``bench-results/vision-city.{json,md}``).

A stamp (``nanodet-city.stamp.json``) holds the hash of everything the model is made
from; a run whose hash matches does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from infra.triton import _file_lock
from models.export import META_LABELS, META_NAME, META_SEQUENCE_LENGTH, META_VERSION
from models.vision import assign, compose, nanodet
from models.vision.convert import (
    REPO_ROOT,
    ConversionError,
    Paths,
    _drop_unused,
    _run,
    fetch_photo,
    sha256_file,
)
from models.vision.convert import build as build_base
from models.vision.detector_config import ConfiguredDetector, DetectorConfig, load_detector_config
from models.vision.metrics import per_class_ap
from web.assets import write_atomic

# Seen installing and training together here (Python 3.11, November 2026). PyPI's torch
# is the CUDA build (the CPU-only index is not reachable here): it pulls the CUDA
# libraries, 5.5 GB in all, and never uses them.
TRAIN_PINS = (
    "torch==2.14.1",
    "torchvision==0.29.2",  # onnx2torch imports it
    "onnx2torch==1.5.15",
    "onnx==1.23.2",
    "numpy==2.4.6",
    "protobuf==6.33.6",
)
TEXTURE_WHEEL = "scikit-image==0.26.0"
TEXTURE_WHEEL_SHA256 = "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
TEXTURE_SHA256 = {
    "gravel": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "grass": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
}
OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples")
TRAIN_PHOTOS = (
    "data/leuvenA.jpg", "text/scenetext01.jpg", "text/scenetext04.jpg",
    "text/scenetext06.jpg", "data/building.jpg",
)  # fmt: skip
HELDOUT_PHOTOS = ("data/leuvenB.jpg", "text/scenetext05.jpg", "text/scenetext03.jpg")
VTEST = "data/vtest.avi"
TRAIN_FRAMES = range(0, 600, 10)  # vtest.avi: the first 60 s train,
HELDOUT_FRAMES = range(650, 795, 10)  # the last 14 s (same camera, other people) do not
SANITY_FRAMES = range(650, 795, 5)

CITY_CLASSES = compose.CITY_CLASSES
CLASS_NAMES = (*nanodet.COCO_CLASSES, *CITY_CLASSES)
NEW_ROWS = (nanodet.NUM_CLASSES, nanodet.NUM_CLASSES + len(CITY_CLASSES))
PRIOR = 0.01  # the new classes' starting score (RetinaNet's focal-loss prior)

TRAIN_SEED, HELDOUT_SEED = 2026, 9101
TRAIN_SCENES, HELDOUT_SCENES = 2400, 400
PSEUDO_THRESHOLD = 0.5
SOFT_MIN = 0.05  # original COCO scores below this are stored as 0
TRAINING = {
    "seed": TRAIN_SEED,
    "threads": 2,
    "steps": 700,
    "batch_size": 16,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "old_row_lr_scale": 0.2,
    "time_limit_s": 900,  # the bound: 15 minutes on this machine's 2 cores
}
PARITY_TOLERANCE = 1e-3
RECIPE = 1
MODEL_NAME = "nanodet_city"
MODEL_VERSION = f"nanodet-city-r{RECIPE}"
SOURCES = ("compose.py", "assign.py", "finetune.py", "city.py")
EVAL_SCORE_THRESHOLD = 0.05  # AP needs the low-scoring detections too
SANITY_THRESHOLD = nanodet.SCORE_THRESHOLD
PIP_TIMEOUT_S = 1800.0


class CityModelError(RuntimeError):
    """The city model could not be made or failed a check: the message says which and why."""


@dataclass(frozen=True)
class CityPaths:
    root: Path = REPO_ROOT

    @property
    def base(self) -> Paths:
        return Paths(self.root)

    @property
    def cache(self) -> Path:
        return self.root / ".cache" / "vision-city"

    @property
    def env(self) -> Path:
        return self.root / ".cache" / "vision-train-env"

    @property
    def env_python(self) -> Path:
        return self.env / "bin" / "python"

    @property
    def work(self) -> Path:
        return self.cache / "run"

    @property
    def model(self) -> Path:
        return self.root / "models" / "build" / "vision" / "nanodet-city.onnx"

    @property
    def stamp(self) -> Path:
        return self.model.with_name("nanodet-city.stamp.json")

    @property
    def results(self) -> Path:
        return self.root / "bench-results" / "vision-city.json"


# ------------------------------------------------------------------------------ sources


def load_photos(
    names: Sequence[str], frames: Sequence[int], extra: Sequence[Path] = ()
) -> list[tuple[str, np.ndarray]]:
    """Background photos of opencv-doc (and ``extra`` files), and frames of vtest.avi."""
    photos = []
    for name in names:
        image = cv2.imread(str(OPENCV_DOC / name))
        if image is None:
            raise CityModelError(
                f"cannot read {OPENCV_DOC / name}: the backgrounds come from Debian's "
                "opencv-doc package (apt-get install opencv-doc)"
            )
        photos.append((f"opencv-doc:{name}", image))
    for path in extra:
        image = cv2.imread(str(path))
        if image is None:
            raise CityModelError(f"cannot read {path}")
        photos.append((path.name, image))
    photos += [(f"opencv-doc:{VTEST}#{k}", frame) for k, frame in read_frames(frames)]
    return photos


def read_frames(frames: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    capture = cv2.VideoCapture(str(OPENCV_DOC / VTEST))
    if not capture.isOpened():
        raise CityModelError(f"cannot open {OPENCV_DOC / VTEST} (apt-get install opencv-doc)")
    try:
        wanted, index = set(frames), 0
        while wanted:
            ok, frame = capture.read()
            if not ok:
                raise CityModelError(
                    f"{VTEST} ended at frame {index}; wanted {sorted(wanted)[:5]}…"
                )
            if index in wanted:
                wanted.discard(index)
                yield index, frame
            index += 1
    finally:
        capture.release()


def fetch_textures(paths: CityPaths, log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """gravel.png and grass.png from the pinned scikit-image wheel (never installed)."""
    target = paths.cache / "textures"
    if all(sha256_file(target / f"{n}.png") == d for n, d in TEXTURE_SHA256.items()):
        return {n: _read_grey(target / f"{n}.png") for n in TEXTURE_SHA256}
    log(f"fetching textures from the {TEXTURE_WHEEL} wheel")
    with tempfile.TemporaryDirectory(prefix="citystream-city-") as tmp:
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--quiet", "-d", tmp, TEXTURE_WHEEL],
            f"pip download {TEXTURE_WHEEL}", PIP_TIMEOUT_S, " (is PyPI reachable?)",
        )  # fmt: skip
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1 or sha256_file(wheels[0]) != TEXTURE_WHEEL_SHA256:
            raise CityModelError(f"the {TEXTURE_WHEEL} wheel is not the pinned one ({wheels})")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, digest in TEXTURE_SHA256.items():
                data = wheel.read(f"skimage/data/{name}.png")
                if hashlib.sha256(data).hexdigest() != digest:
                    raise CityModelError(f"skimage/data/{name}.png is not the pinned texture")
                write_atomic(target / f"{name}.png", data)
    return {n: _read_grey(target / f"{n}.png") for n in TEXTURE_SHA256}


def _read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CityModelError(f"cannot read {path}")
    return image


def ensure_train_env(paths: CityPaths, log: Callable[[str], None]) -> Path:
    """The torch venv with the pinned packages, made once (a stamp records the pins)."""
    stamp = paths.env / ".citystream-stamp"
    wanted = f"python {sys.version.split()[0]}\n" + "\n".join(TRAIN_PINS) + "\n"
    try:
        if stamp.read_text() == wanted and paths.env_python.is_file():
            return paths.env_python
    except OSError:
        pass  # no stamp yet: make the env
    log(f"creating the training venv {paths.env} ({', '.join(TRAIN_PINS)}; 5.5 GB)")
    shutil.rmtree(paths.env, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(paths.env)], "python -m venv", 300)
    _run(
        [str(paths.env_python), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *TRAIN_PINS],
        "pip install of the training pins", PIP_TIMEOUT_S, " (is PyPI reachable?)",
    )  # fmt: skip
    stamp.write_text(wanted)
    return paths.env_python


# ------------------------------------------------------------------------ graph surgery


@dataclass(frozen=True)
class HeadLevel:
    """One level of NanoDet's head in the ONNX graph."""

    stride: int
    input: str  # the neck's output the head convolves
    class_conv: onnx.NodeProto  # the 1×1 conv giving 80 class + 44 bin channels
    split: onnx.NodeProto
    sigmoid: onnx.NodeProto
    reshape: onnx.NodeProto


def find_head(model: onnx.ModelProto) -> list[HeadLevel]:
    """Each level's head: from its scores output back through Reshape, Sigmoid, Split, the
    1×1 class conv and the Conv/LeakyRelu/Pad chain before it."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    levels = []
    for stride in nanodet.STRIDES:
        node = producer[nanodet.scores_output(stride)]  # Transpose
        reshape = producer[node.input[0]]
        sigmoid = producer[reshape.input[0]]
        split = producer[sigmoid.input[0]]
        class_conv = producer[split.input[0]]
        ops = (reshape.op_type, sigmoid.op_type, split.op_type, class_conv.op_type)
        if ops != ("Reshape", "Sigmoid", "Split", "Conv"):
            raise CityModelError(
                f"stride {stride}: unexpected head {ops}: not the converted NanoDet"
            )
        node = class_conv
        while node.op_type in ("Conv", "LeakyRelu", "Pad"):
            tensor = node.input[0]
            node = producer[tensor]
        levels.append(HeadLevel(stride, tensor, class_conv, split, sigmoid, reshape))
    return levels


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    for init in model.graph.initializer:
        if init.name == name:
            return init
    raise CityModelError(f"no initializer {name}")


def _replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    _initializer(model, name).CopyFrom(numpy_helper.from_array(array, name))


def extend_head(base: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The converted NanoDet with 86 classes: each level's class conv gets 6 rows after the
    80 COCO rows (weights N(0, 0.01), bias logit(PRIOR)); the Splits and score Reshapes
    follow. Everything else is the original, byte for byte."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    rng = np.random.default_rng(seed)
    old, new = nanodet.NUM_CLASSES, len(CLASS_NAMES)
    bins = nanodet.EDGES * nanodet.REG_BINS
    split_name, shape_name = "city_split_sizes", "city_scores_shape"
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([new, bins], np.int64), split_name),
        numpy_helper.from_array(np.array([0, new, -1], np.int64), shape_name),
    ])  # fmt: skip
    for level in find_head(model):
        weight_name, bias_name = level.class_conv.input[1], level.class_conv.input[2]
        weight = numpy_helper.to_array(_initializer(model, weight_name))
        bias = numpy_helper.to_array(_initializer(model, bias_name))
        if weight.shape[0] != old + bins:
            raise CityModelError(
                f"class conv {level.class_conv.name} has {weight.shape[0]} rows, not {old + bins}"
            )
        rows = rng.normal(0, 0.01, (new - old, *weight.shape[1:])).astype(np.float32)
        prior = np.full(new - old, np.log(PRIOR / (1 - PRIOR)), np.float32)
        _replace_initializer(model, weight_name, np.concatenate([weight[:old], rows, weight[old:]]))
        _replace_initializer(model, bias_name, np.concatenate([bias[:old], prior, bias[old:]]))
        for node in model.graph.node:
            if node.name == level.split.name:
                node.input[1] = split_name
            if node.name == level.reshape.name:
                node.input[1] = shape_name
    for output in model.graph.output:
        if output.name.startswith("scores_"):
            output.type.tensor_type.shape.dim[2].dim_value = new
    _drop_unused(model.graph)
    return model


def cut_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """The head alone, for training: the neck's three outputs in, the six outputs out, the
    class scores as logits (the Sigmoids bypassed). Node and initializer names are the
    full graph's, so trained weights go back by name."""
    levels = find_head(model)
    graph = model.graph
    bypass = {level.sigmoid.output[0]: level.sigmoid.input[0] for level in levels}
    sigmoids = {level.sigmoid.name for level in levels}
    inputs = {level.input for level in levels}
    producer = {out: node for node in graph.node for out in node.output}
    kept: set[str] = set()
    stack = [output.name for output in graph.output]
    while stack:
        tensor = stack.pop()
        if tensor in inputs or tensor not in producer or producer[tensor].name in kept:
            continue
        kept.add(producer[tensor].name)
        stack.extend(name for name in producer[tensor].input if name)
    nodes = []
    for node in graph.node:  # the full graph's order is topological
        if node.name in kept and node.name not in sigmoids:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [bypass.get(name, name) for name in copy.input]
            nodes.append(copy)
    consumers = {name: node for node in nodes for name in node.input}
    head_inputs = []
    for level in levels:
        pad = consumers[level.input]
        conv = consumers[pad.output[0]]
        channels = numpy_helper.to_array(_initializer(model, conv.input[1])).shape[1]
        side = nanodet.INPUT_SIZE // level.stride
        head_inputs.append(
            helper.make_tensor_value_info(
                level.input, onnx.TensorProto.FLOAT, ["batch", channels, side, side]
            )
        )
    used = {name for node in nodes for name in node.input}
    head = helper.make_model(
        helper.make_graph(
            nodes, "nanodet_head", head_inputs, list(graph.output),
            [init for init in graph.initializer if init.name in used],
        ),
        opset_imports=list(model.opset_import),
    )  # fmt: skip
    head.ir_version = model.ir_version
    onnx.checker.check_model(head)
    return head


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensors ``names`` (for onnxruntime)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names
    )
    return copy


def export(
    extended: onnx.ModelProto, weights: dict[str, np.ndarray], stamp: dict[str, Any]
) -> onnx.ModelProto:
    """The extended graph with the trained weights, named and stamped."""
    model = onnx.ModelProto()
    model.CopyFrom(extended)
    for name, array in sorted(weights.items()):
        current = _initializer(model, name)
        if tuple(current.dims) != array.shape:
            raise CityModelError(
                f"trained {name} has shape {array.shape}, the graph {tuple(current.dims)}"
            )
        _replace_initializer(model, name, array.astype(np.float32))
    meta = {
        META_NAME: MODEL_NAME,
        META_VERSION: MODEL_VERSION,
        META_LABELS: "[]",
        META_SEQUENCE_LENGTH: "0",
        "citystream.classes": json.dumps(list(CLASS_NAMES)),
        "citystream.event_codes": json.dumps(compose.CITY_CODES, sort_keys=True),
        "citystream.input": "BGR 416x416, (x - mean) / std, see models.vision.nanodet",
        "citystream.recipe_sha256": stamp["recipe_sha256"],
        "citystream.base_sha256": stamp["base_sha256"],
        "citystream.train_pins": json.dumps(list(TRAIN_PINS)),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.graph.name = MODEL_NAME
    model.producer_name = "citystream models.vision.city"
    onnx.checker.check_model(model, full_check=True)
    return model


# ------------------------------------------------------------------------------- scenes


def _session(model: onnx.ModelProto | Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def original_detections(
    session: ort.InferenceSession, images: Sequence[np.ndarray], threshold: float
) -> list[list[nanodet.Detection]]:
    """The ORIGINAL NanoDet's detections (≥ threshold) on each image, batches of 16."""
    results: list[list[nanodet.Detection]] = []
    for start in range(0, len(images), 16):
        batch, placements = nanodet.preprocess_batch(images[start : start + 16])
        outputs = dict(
            zip(
                nanodet.OUTPUT_NAMES,
                session.run(list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: batch}),
                strict=True,
            )
        )
        results += nanodet.decode_batch(outputs, placements, score_threshold=threshold)
    return results


def make_scenes(
    seed: int,
    count: int,
    photos: Sequence[tuple[str, np.ndarray]],
    textures: dict[str, np.ndarray],
    session: ort.InferenceSession,
) -> list[compose.Scene]:
    """``count`` scenes of one set, each with the original model's confident detections
    on its background as COCO labels."""
    scenes = [
        compose.compose_scene(compose.scene_rng(seed, i), photos, textures) for i in range(count)
    ]
    found = original_detections(session, [s.background for s in scenes], PSEUDO_THRESHOLD)
    return [
        compose.add_pseudo_labels(
            s, np.array([d.box for d in ds], np.float32).reshape(-1, 4), [d.class_name for d in ds]
        )
        for s, ds in zip(scenes, found, strict=True)
    ]


def scene_labels(scene: compose.Scene) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in 416×416 input pixels (the scene stretched) and class indices (0-85)."""
    height, width = scene.image.shape[:2]
    scale = np.array([nanodet.INPUT_SIZE / width, nanodet.INPUT_SIZE / height] * 2, np.float32)
    classes = np.array([CLASS_NAMES.index(label) for label in scene.labels], np.int64)
    return scene.boxes * scale, classes


def write_training_data(
    work: Path,
    scenes: Sequence[compose.Scene],
    base: onnx.ModelProto,
    extended: onnx.ModelProto,
    log: Callable[[str], None],
) -> None:
    """Everything ``models.vision.finetune`` reads (see its docstring)."""
    levels = find_head(base)
    session = _session(with_outputs(base, [level.input for level in levels]))
    names = [*nanodet.OUTPUT_NAMES, *(level.input for level in levels)]
    centres, _, _ = assign.grid()
    features = [
        np.lib.format.open_memmap(
            work / f"features_{level.stride}.npy", mode="w+", dtype=np.float16,
            shape=(len(scenes), 128, *(2 * (nanodet.INPUT_SIZE // level.stride,))),
        )
        for level in levels
    ]  # fmt: skip
    all_boxes, all_classes, all_images = [], [], []
    soft: dict[str, list[np.ndarray]] = {"image": [], "cell": [], "class": [], "score": []}
    for start in range(0, len(scenes), 16):
        chunk = scenes[start : start + 16]
        batch, _ = nanodet.preprocess_batch([s.image for s in chunk])
        outputs = dict(zip(names, session.run(names, {nanodet.INPUT_NAME: batch}), strict=True))
        for k, level in enumerate(levels):
            features[k][start : start + len(chunk)] = outputs[level.input].astype(np.float16)
        scores = np.concatenate(
            [outputs[nanodet.scores_output(s)] for s in nanodet.STRIDES], axis=1
        )
        for row, scene in enumerate(chunk):
            boxes, classes = scene_labels(scene)
            all_boxes.append(boxes)
            all_classes.append(classes)
            all_images.append(np.full(len(boxes), start + row, np.int64))
            # The original's COCO scores stay targets outside the pasted objects only.
            city = boxes[classes >= nanodet.NUM_CLASSES]
            inside = np.zeros(len(centres), bool)
            for x1, y1, x2, y2 in city:
                inside |= (
                    (centres[:, 0] >= x1)
                    & (centres[:, 0] <= x2)
                    & (centres[:, 1] >= y1)
                    & (centres[:, 1] <= y2)
                )
            cells, cls = np.nonzero((scores[row] >= SOFT_MIN) & ~inside[:, None])
            soft["image"].append(np.full(len(cells), start + row, np.int32))
            soft["cell"].append(cells.astype(np.int32))
            soft["class"].append(cls.astype(np.int16))
            soft["score"].append(scores[row][cells, cls].astype(np.float16))
        if start % 400 == 0:
            log(f"  features and soft targets: {start + len(chunk)}/{len(scenes)}")
    for f in features:
        f.flush()
    np.savez(
        work / "labels.npz",
        boxes=np.concatenate(all_boxes).astype(np.float32), classes=np.concatenate(all_classes),
        image=np.concatenate(all_images),
        **{f"soft_{k}": np.concatenate(v) for k, v in soft.items()},
    )  # fmt: skip
    # A few images in full precision for the torch-vs-onnxruntime parity check.
    check, _ = nanodet.preprocess_batch([s.image for s in scenes[:4]])
    check_out = session.run([level.input for level in levels], {nanodet.INPUT_NAME: check})
    for level, array in zip(levels, check_out, strict=True):
        np.save(work / f"check_features_{level.stride}.npy", array)
    np.save(work / "check_images.npy", check)
    onnx.save(cut_head(extended), str(work / "head.onnx"))
    class_convs = [name for level in find_head(extended) for name in level.class_conv.input[1:3]]
    config = {
        **TRAINING,
        "strides": list(nanodet.STRIDES),
        "num_classes": len(CLASS_NAMES),
        "new_class_rows": list(NEW_ROWS),
        "class_conv_initializers": class_convs,
    }
    (work / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def run_finetune(
    python: Path, work: Path, root: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """``models.vision.finetune`` in the torch venv, its progress lines passed on."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(TRAINING["threads"])}
    argv = [str(python), "-m", "models.vision.finetune", str(work)]
    try:
        proc = subprocess.Popen(
            argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError as exc:
        raise CityModelError(f"cannot start {python}: {exc}") from exc
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if "Warning" not in line:  # onnx2torch's and torch's warnings are noise here
            log(f"  finetune: {line}")
        tail = [*tail[-40:], line]
    if proc.wait() != 0:
        raise CityModelError(
            "fine-tuning failed (exit {}):\n{}".format(proc.returncode, "\n".join(tail))
        )
    return json.loads((work / "train-log.json").read_text())


def check_parity(model: onnx.ModelProto, work: Path) -> float:
    """onnxruntime on the exported model against torch's trained head, on the check images:
    the weights went back into the right places."""
    session = _session(model)
    outputs = session.run(
        list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: np.load(work / "check_images.npy")}
    )
    with np.load(work / "check.npz") as npz:
        torch_outputs = [npz[f"output_{k}"] for k in range(len(nanodet.OUTPUT_NAMES))]
    worst = 0.0
    for name, ours, theirs in zip(nanodet.OUTPUT_NAMES, outputs, torch_outputs, strict=True):
        if name.startswith("scores_"):
            theirs = 1 / (1 + np.exp(-theirs))  # the head was trained on logits
        if ours.shape != theirs.shape:
            raise CityModelError(f"{name}: onnxruntime gives {ours.shape}, torch {theirs.shape}")
        worst = max(worst, float(np.abs(ours - theirs).max()))
    if not worst <= PARITY_TOLERANCE:
        raise CityModelError(
            f"the exported model differs from the trained torch head by {worst:.3g} "
            f"(> {PARITY_TOLERANCE})"
        )
    return worst


# ----------------------------------------------------------------------------- evaluation


def _as_tuples(
    found: Sequence[nanodet.Detection],
) -> list[tuple[str, float, tuple[float, float, float, float]]]:
    return [(d.class_name, d.score, d.box) for d in found]


def evaluate(
    city_config: DetectorConfig,
    base_config: DetectorConfig,
    scenes: Sequence[compose.Scene],
    frames: Sequence[np.ndarray],
) -> dict[str, Any]:
    """AP@0.5 per class on the held-out scenes for both models, and people on vtest frames."""
    # Down to EVAL_SCORE_THRESHOLD: AP needs the whole precision-recall curve. The vtest
    # check filters at the usual threshold afterwards (NMS keeps those boxes either way).
    low = {"score_threshold": EVAL_SCORE_THRESHOLD}
    city = ConfiguredDetector(city_config.model_copy(update=low), threads=2)
    base = ConfiguredDetector(base_config.model_copy(update=low), threads=2)
    images = [s.image for s in scenes]
    city_found = city.detect(images)
    base_found = base.detect(images)
    truth = [
        [(label, tuple(map(float, box))) for label, box in zip(s.labels, s.boxes, strict=True)]
        for s in scenes
    ]
    coco_present = sorted(
        {label for s in scenes for label, p in zip(s.labels, s.pseudo, strict=True) if p}
    )
    coco_counts = {c: sum(label == c for s in scenes for label in s.labels) for c in coco_present}
    # COCO classes with enough pseudo-labelled boxes to say something.
    coco_eval = [c for c in coco_present if coco_counts[c] >= 10]
    city_ap = per_class_ap([_as_tuples(f) for f in city_found], truth, CITY_CLASSES)
    coco_city = per_class_ap([_as_tuples(f) for f in city_found], truth, coco_eval)
    coco_base = per_class_ap([_as_tuples(f) for f in base_found], truth, coco_eval)
    counts = {c: sum(label == c for s in scenes for label in s.labels) for c in CITY_CLASSES}
    # vtest.avi's held-out frames: people the original model finds, found again?
    city_people = [
        [d for d in f if d.class_name == "person" and d.score >= SANITY_THRESHOLD]
        for f in city.detect(frames)
    ]
    base_people = [
        [d for d in f if d.class_name == "person" and d.score >= SANITY_THRESHOLD]
        for f in base.detect(frames)
    ]
    refound = 0
    for ours, theirs in zip(city_people, base_people, strict=True):
        if ours and theirs:
            ious = assign.box_iou(
                np.array([d.box for d in theirs]), np.array([d.box for d in ours])
            )
            refound += int((ious.max(axis=1) >= 0.5).sum())
    base_total = sum(len(p) for p in base_people)
    return {
        "heldout_scenes": len(scenes),
        "city_ap50": {c: round(v, 4) for c, v in city_ap.items()},
        "city_map50": round(float(np.nanmean(list(city_ap.values()))), 4),
        "city_boxes": counts,
        "coco_ap50_vs_pseudo_labels": {
            c: {
                "city_model": round(coco_city[c], 4),
                "original": round(coco_base[c], 4),
                "boxes": coco_counts[c],
            }
            for c in coco_eval
        },
        "vtest_people": {
            "frames": len(frames),
            "score_threshold": SANITY_THRESHOLD,
            "original": base_total,
            "city_model": sum(len(p) for p in city_people),
            "original_refound_iou50": refound,
            "refound_fraction": round(refound / base_total, 4) if base_total else None,
        },
    }


def write_results(paths: CityPaths, results: dict[str, Any]) -> None:
    write_atomic(paths.results, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode())
    ev, train = results["evaluation"], results["training"]
    lines = [
        "# City classes: fine-tuned NanoDet on composed scenes",
        "",
        f"Held-out composed set: {ev['heldout_scenes']} scenes on backgrounds never trained on "
        f"(seed {HELDOUT_SEED}). Training: {train['images']} scenes, {train['steps_done']} steps "
        f"of {TRAINING['batch_size']}, {train['train_seconds']} s on 2 CPU cores "
        f"(head only; backbone frozen).",
        "",
        "| class | code | boxes | AP@0.5 |",
        "| --- | --- | ---: | ---: |",
    ]
    for c in CITY_CLASSES:
        lines.append(
            f"| {c} | {compose.CITY_CODES[c]} | {ev['city_boxes'][c]} | {ev['city_ap50'][c]:.3f} |"
        )
    lines += [
        f"| **mean** | | | **{ev['city_map50']:.3f}** |",
        "",
        "COCO classes on the same scenes, against the original model's own confident "
        "detections on the backgrounds (so the original scores high by construction; the "
        "question is how much the fine-tuned model lost):",
        "",
        "| class | boxes | original AP@0.5 | city model AP@0.5 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c, v in ev["coco_ap50_vs_pseudo_labels"].items():
        lines.append(f"| {c} | {v['boxes']} | {v['original']:.3f} | {v['city_model']:.3f} |")
    people = ev["vtest_people"]
    lines += [
        "",
        f"People on {people['frames']} held-out vtest.avi frames "
        f"(score ≥ {people['score_threshold']}): "
        f"original {people['original']}, city model {people['city_model']}; "
        f"{people['original_refound_iou50']} of the original's found again (IoU ≥ 0.5).",
        "",
        "These are composed scenes with drawn objects: no real photo of these classes was "
        "available, so these numbers say nothing about real-world accuracy (README, "
        "'City classes').",
    ]
    write_atomic(paths.results.with_suffix(".md"), ("\n".join(lines) + "\n").encode())


# ------------------------------------------------------------------------------- build


def recipe(paths: CityPaths) -> dict[str, Any]:
    """What the model is made from; its hash decides whether a build is current."""
    here = Path(__file__).resolve().parent
    return {
        "recipe": RECIPE,
        "base_sha256": sha256_file(paths.base.model),
        "sources_sha256": {name: sha256_file(here / name) for name in SOURCES},
        "train_pins": list(TRAIN_PINS),
        "training": TRAINING,
        "scenes": {"train": [TRAIN_SEED, TRAIN_SCENES], "heldout": [HELDOUT_SEED, HELDOUT_SCENES]},
        "backgrounds": {
            "train": [*TRAIN_PHOTOS, f"{VTEST} frames {_span(TRAIN_FRAMES)}", "bus.jpg"],
            "heldout": [*HELDOUT_PHOTOS, f"{VTEST} frames {_span(HELDOUT_FRAMES)}"],
            "opencv_doc_sha256": {
                n: sha256_file(OPENCV_DOC / n) for n in (*TRAIN_PHOTOS, *HELDOUT_PHOTOS, VTEST)
            },
        },
        "textures": {"wheel": TEXTURE_WHEEL, "sha256": TEXTURE_SHA256},
        "pseudo_threshold": PSEUDO_THRESHOLD,
        "soft_min": SOFT_MIN,
    }


def _span(frames: range) -> str:
    return f"{frames.start}-{frames.stop - 1} every {frames.step}"


def recipe_sha256(paths: CityPaths) -> str:
    return hashlib.sha256(json.dumps(recipe(paths), sort_keys=True).encode()).hexdigest()


def is_current(paths: CityPaths) -> bool:
    try:
        stamp = json.loads(paths.stamp.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and paths.base.model.is_file()
        and stamp.get("recipe_sha256") == recipe_sha256(paths)
        and stamp.get("output_sha256") == sha256_file(paths.model)
    )


def build(
    root: Path = REPO_ROOT, *, force: bool = False, log: Callable[[str], None] = print
) -> Path:
    """Make ``models/build/vision/nanodet-city.onnx`` unless the stamp says it is current."""
    paths = CityPaths(Path(root))
    build_base(paths.root, log=log)  # the converted COCO model it starts from
    if not force and is_current(paths):
        log(f"{paths.model.relative_to(paths.root)} is up to date ({MODEL_VERSION}); nothing to do")
        return paths.model
    with _file_lock(paths.cache / "city.lock"):
        if not force and is_current(paths):
            log(f"{paths.model.relative_to(paths.root)} was just built by another run")
            return paths.model
        return _build(paths, log)


def _build(paths: CityPaths, log: Callable[[str], None]) -> Path:
    started = time.monotonic()
    timings: dict[str, float] = {}
    # Hashed now: the files as they were when this build read them.
    made_from, made_from_sha256 = recipe(paths), recipe_sha256(paths)

    def lap(what: str, since: float) -> float:
        timings[what] = round(time.monotonic() - since, 1)
        return time.monotonic()

    python = ensure_train_env(paths, log)
    textures = fetch_textures(paths, log)
    bus = fetch_photo(paths.base, log)
    base = onnx.load(str(paths.base.model))
    original = _session(base)
    t = time.monotonic()
    log(f"composing {TRAIN_SCENES} training scenes (seed {TRAIN_SEED}) with pseudo-labels")
    train_scenes = make_scenes(
        TRAIN_SEED, TRAIN_SCENES, load_photos(TRAIN_PHOTOS, TRAIN_FRAMES, [bus]), textures, original
    )
    log(f"composing {HELDOUT_SCENES} held-out scenes (seed {HELDOUT_SEED}, other backgrounds)")
    heldout = make_scenes(
        HELDOUT_SEED,
        HELDOUT_SCENES,
        load_photos(HELDOUT_PHOTOS, HELDOUT_FRAMES),
        textures,
        original,
    )
    t = lap("compose_s", t)
    extended = extend_head(base, TRAIN_SEED)
    shutil.rmtree(paths.work, ignore_errors=True)
    paths.work.mkdir(parents=True)
    log("features of the frozen backbone and the original's COCO scores (onnxruntime)")
    write_training_data(paths.work, train_scenes, base, extended, log)
    t = lap("features_s", t)
    steps, batch = TRAINING["steps"], TRAINING["batch_size"]
    log(f"fine-tuning in {paths.env.relative_to(paths.root)} ({steps} steps of {batch})")
    training = run_finetune(python, paths.work, paths.root, log)
    t = lap("finetune_s", t)
    with np.load(paths.work / "weights.npz") as npz:
        weights = {name: npz[name] for name in npz.files}
    stamp: dict[str, Any] = {
        "recipe_sha256": made_from_sha256,
        "base_sha256": made_from["base_sha256"],
    }
    model = export(extended, weights, stamp)
    parity = check_parity(model, paths.work)
    data = model.SerializeToString()
    write_atomic(paths.model, data)
    config = load_detector_config(DETECTORS / "nanodet-city.json")
    base_config = load_detector_config(DETECTORS / "nanodet-coco.json")
    frames = [frame for _, frame in read_frames(SANITY_FRAMES)]
    log(f"evaluating on {len(heldout)} held-out scenes and {len(frames)} vtest.avi frames")
    evaluation = evaluate(config, base_config, heldout, frames)
    lap("evaluate_s", t)
    stamp.update({
        "recipe": made_from,
        "output_sha256": hashlib.sha256(data).hexdigest(),
        "torch_onnxruntime_max_abs_diff": parity,
        "training": {k: v for k, v in training.items() if k != "history"},
        "seconds": {**timings, "total_s": round(time.monotonic() - started, 1)},
    })  # fmt: skip
    results = {
        "model": str(paths.model.relative_to(paths.root)),
        "model_version": MODEL_VERSION,
        "output_sha256": stamp["output_sha256"],
        "training": {**stamp["training"], "history": training["history"]},
        "seconds": stamp["seconds"],
        "evaluation": evaluation,
        "train_pins": list(TRAIN_PINS),
    }
    write_results(paths, results)
    write_atomic(paths.stamp, (json.dumps(stamp, indent=2) + "\n").encode())
    # The cached features are 2 GB; the model and its stamp are what a later run checks.
    for name in ("features_8.npy", "features_16.npy", "features_32.npy"):
        (paths.work / name).unlink(missing_ok=True)
    log(
        f"wrote {paths.model.relative_to(paths.root)} ({len(data) / 1e6:.1f} MB) in "
        f"{stamp['seconds']['total_s']} s; held-out mAP@0.5 over the city classes "
        f"{evaluation['city_map50']:.3f} ({paths.results.relative_to(paths.root)})"
    )
    return paths.model


DETECTORS = Path(__file__).resolve().parent / "detectors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.vision.city",
        description="Compose city scenes, fine-tune NanoDet on them, evaluate (cached).",
    )
    parser.add_argument("--force", action="store_true", help="build again even when current")
    args = parser.parse_args(argv)
    try:
        build(force=args.force)
    except (CityModelError, ConversionError) as exc:
        print(f"models.vision.city: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
