"""A detector described by a configuration file alone: an operator's own ONNX detector (a
fine-tuned YOLO exported to ONNX, say) drops in without code.

    config = load_detector_config("models/vision/detectors/nanodet-city.json")
    detector = ConfiguredDetector(config)                # onnxruntime in-process
    per_image = detector.detect([frame_a, frame_b])      # BGR uint8 frames, any size
    for d in per_image[0]:
        print(d.class_name, d.score, d.box, config.event_code(d.class_name))

The file (JSON) says: the model path (relative to the file), the input (size, tensor
layout, BGR or RGB, mean/std, stretch or letterbox), the output format, thresholds, the
class names in the model's order and the event code (``qingdao.json``'s taxonomy) each
class reports. Output formats:

* ``nanodet``: ours (``models.vision.nanodet``): per stride ``scores_<s>`` [N, cells, C]
  after the sigmoid and ``bins_<s>`` [N, cells, 4·bins] edge-distance logits;
* ``yolov8``: one output [N, 4 + C, A]: boxes (cx, cy, w, h) in input pixels, then the
  class scores (after the sigmoid); Ultralytics' export ([N, A, 4 + C] is accepted too);
* ``yolov5``: one output [N, A, 5 + C]: (cx, cy, w, h), objectness, class scores; a
  box's score is objectness × class score.

Decoding is pure numpy (``decode``), so each format is tested on synthetic outputs whose
boxes are known; the runner (``ConfiguredDetector``, a ``models.vision.detector.Runner``
as NanoDet's and the face detector's are) feeds onnxruntime or any ``models.inference``
backend (Triton).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.export import ModelInfo
from models.vision.detector import Runner
from models.vision.nanodet import Detection, Placement, class_nms

EVENT_CODE = re.compile(r"^[A-K]\d{2}$")
MAX_CANDIDATES = 1000  # highest-scoring candidates kept before NMS (bounds its cost)


class DetectorConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid: the message says where."""


Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None  # the model's input tensor; None: its first input
    width: int = Field(gt=0, le=4096)
    height: int = Field(gt=0, le=4096)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["BGR", "RGB"] = "RGB"
    # Per channel, in the order of ``channels``, on 0-255 pixel values: (x - mean) / std.
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    resize: Literal["stretch", "letterbox"] = "letterbox"
    pad_value: int = Field(default=114, ge=0, le=255)  # letterbox bars (Ultralytics' grey)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        return std


class NanoDetOutputs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strides: tuple[int, ...] = (8, 16, 32)
    reg_bins: int = Field(default=11, ge=2)
    scores: str = "scores_{stride}"  # output names, {stride} filled in
    bins: str = "bins_{stride}"


class DetectorConfig(BaseModel):
    """One detector: what the file says, checked. ``base_dir`` is the file's folder
    (``model_path`` is relative to it unless absolute)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    model_path: Path
    input: InputSpec
    output_format: Literal["nanodet", "yolov8", "yolov5"]
    output: str | None = None  # yolov8/yolov5: the output tensor; None: the first
    nanodet: NanoDetOutputs = NanoDetOutputs()
    score_threshold: Probability = 0.35
    iou_threshold: Probability = 0.5
    max_detections: int = Field(default=100, gt=0)
    class_names: tuple[str, ...] = Field(min_length=1)
    event_codes: dict[str, str] = Field(default_factory=dict)
    base_dir: Path = Path(".")

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise ValueError(f"class names repeat: {repeated}")
        if any(not n.strip() for n in names):
            raise ValueError("class names must not be empty")
        return names

    @model_validator(mode="after")
    def _codes_and_sizes(self) -> DetectorConfig:
        unknown = sorted(set(self.event_codes) - set(self.class_names))
        if unknown:
            raise ValueError(f"event_codes name classes the model does not have: {unknown}")
        bad = {k: v for k, v in self.event_codes.items() if not EVENT_CODE.match(v)}
        if bad:
            raise ValueError(f"event codes must look like 'A01' (letter A-K, two digits): {bad}")
        if self.output_format == "nanodet":
            for stride in self.nanodet.strides:
                if self.input.width % stride or self.input.height % stride:
                    raise ValueError(
                        f"a nanodet input ({self.input.width}×{self.input.height}) must be a "
                        f"multiple of every stride {self.nanodet.strides}"
                    )
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model_file(self) -> Path:
        path = self.model_path if self.model_path.is_absolute() else self.base_dir / self.model_path
        return path.resolve()

    def event_code(self, class_name: str) -> str | None:
        """The taxonomy code a detection of this class reports (None: it reports none)."""
        return self.event_codes.get(class_name)

    def check_codes(self, known: Sequence[str]) -> None:
        """Raise ``DetectorConfigError`` if a mapped code is not in ``known`` (the taxonomy)."""
        missing = sorted(set(self.event_codes.values()) - set(known))
        if missing:
            raise DetectorConfigError(f"{self.name}: event codes not in the taxonomy: {missing}")


def load_detector_config(path: str | Path, *, require_model: bool = True) -> DetectorConfig:
    """Read and check a configuration file; ``require_model``: the model file must exist."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DetectorConfigError(f"no detector configuration at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectorConfigError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DetectorConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DetectorConfigError(f"{path} must hold a JSON object, not {type(raw).__name__}")
    if "base_dir" in raw:
        raise DetectorConfigError(f"{path}: base_dir is set by the loader (the file's folder)")
    try:
        config = DetectorConfig.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DetectorConfigError(f"{path}: {problems}") from exc
    if require_model and not config.model_file.is_file():
        raise DetectorConfigError(f"{path}: the model file {config.model_file} does not exist")
    return config


# -------------------------------------------------------------------------- preprocessing


def preprocess(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Placement]:
    """A BGR uint8 image → one input row [1, ...] as ``spec`` says, and its placement."""
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
    ):
        raise ValueError("an image must be an H×W×3 uint8 BGR array")
    height, width = image.shape[:2]
    if spec.resize == "letterbox":
        scale = min(spec.width / width, spec.height / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.full((spec.height, spec.width, 3), spec.pad_value, np.uint8)
        pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
        )
        placement = Placement(width, height, new_w / width, new_h / height, pad_x, pad_y)
    else:
        canvas = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        placement = Placement(width, height, spec.width / width, spec.height / height)
    if spec.channels == "RGB":
        canvas = canvas[..., ::-1]
    tensor = (canvas.astype(np.float32) - np.asarray(spec.mean, np.float32)) / np.asarray(
        spec.std, np.float32
    )
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[np.newaxis]), placement


# ------------------------------------------------------------------------------- decoding


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def candidates_nanodet(
    outputs: Mapping[str, np.ndarray], config: DetectorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One image's nanodet outputs → boxes [A, 4] (input pixels) and scores [A, C]."""
    spec, n = config.input, config.nanodet
    all_boxes, all_scores = [], []
    for stride in n.strides:
        cols, rows = spec.width // stride, spec.height // stride
        scores = np.asarray(outputs[n.scores.format(stride=stride)], np.float64)
        bins = np.asarray(outputs[n.bins.format(stride=stride)], np.float64)
        if scores.shape != (rows * cols, config.num_classes) or bins.shape != (
            rows * cols,
            4 * n.reg_bins,
        ):
            raise ValueError(
                f"stride {stride}: expected scores ({rows * cols}, {config.num_classes}) and bins "
                f"({rows * cols}, {4 * n.reg_bins}), got {scores.shape} and {bins.shape}"
            )
        ys, xs = np.divmod(np.arange(rows * cols), cols)
        centres = (np.stack([xs, ys], axis=1) + 0.5) * stride
        d = _softmax(bins.reshape(-1, 4, n.reg_bins), 2) @ np.arange(n.reg_bins) * stride
        all_boxes.append(np.concatenate([centres - d[:, :2], centres + d[:, 2:]], axis=1))
        all_scores.append(scores)
    return np.concatenate(all_boxes), np.concatenate(all_scores)


def _yolo_rows(output: np.ndarray, width: int) -> np.ndarray:
    """One image's YOLO output as rows [A, width] whichever way round it came."""
    output = np.asarray(output, np.float64)
    if output.ndim != 2:
        raise ValueError(f"a YOLO output must be 2-D per image, got shape {output.shape}")
    if output.shape[1] == width:
        return output
    if output.shape[0] == width:
        return output.T
    raise ValueError(
        f"a YOLO output of shape {output.shape} has no axis of {width} (boxes + classes)"
    )


def _cxcywh(rows: np.ndarray) -> np.ndarray:
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def candidates_yolov8(output: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """[4 + C, A] (or [A, 4 + C]) → boxes [A, 4] and scores [A, C]."""
    rows = _yolo_rows(output, 4 + num_classes)
    return _cxcywh(rows), rows[:, 4:]


def candidates_yolov5(output: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """[A, 5 + C] → boxes [A, 4] and scores [A, C] = objectness × class score."""
    rows = _yolo_rows(output, 5 + num_classes)
    return _cxcywh(rows), rows[:, 4:5] * rows[:, 5:]


def decode(
    outputs: Mapping[str, np.ndarray], placement: Placement, config: DetectorConfig
) -> list[Detection]:
    """One image's outputs (no batch dimension) → detections in the image's pixels, highest
    score first: candidates above the threshold, per-class NMS, the top ``max_detections``."""
    if config.output_format == "nanodet":
        boxes, scores = candidates_nanodet(outputs, config)
    else:
        name = config.output or next(iter(outputs))
        if name not in outputs:
            raise ValueError(f"the model gave no output {name!r} (it gave {sorted(outputs)})")
        decoder = candidates_yolov8 if config.output_format == "yolov8" else candidates_yolov5
        boxes, scores = decoder(outputs[name], config.num_classes)
    keep = np.isfinite(scores) & (scores > config.score_threshold)
    cells, classes = np.nonzero(keep)
    boxes, values = boxes[cells], scores[cells, classes]
    finite = np.isfinite(boxes).all(axis=1)
    boxes, values, classes = boxes[finite], values[finite], classes[finite]
    if len(values) > MAX_CANDIDATES:
        top = np.argsort(-values, kind="stable")[:MAX_CANDIDATES]
        boxes, values, classes = boxes[top], values[top], classes[top]
    kept = class_nms(boxes, values, classes, config.iou_threshold)[: config.max_detections]
    image_boxes = placement.to_image(boxes[kept])
    return [
        Detection(
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            class_name=config.class_names[int(c)],
            score=float(s),
        )
        for b, s, c in zip(image_boxes, values[kept], classes[kept], strict=True)
    ]


# -------------------------------------------------------------------------------- running

Infer = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class ConfiguredModel:
    """A configured detector as a ``models.vision.detector.ImageModel``: each image one
    input row as the file says, the rows' outputs decoded in the file's format."""

    def __init__(self, config: DetectorConfig, input_name: str) -> None:
        self.config = config
        self.name = config.name
        self.input_name = input_name

    def expected(self) -> ModelInfo:
        # Our own models carry the metadata a check compares; an operator's model is
        # described by its configuration file alone, so there is nothing to check it by.
        raise DetectorConfigError(
            f"{self.name}: an operator's model has no expected description to check it "
            "against; its configuration file is all there is"
        )

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, Any]:
        done = [preprocess(image, self.config.input) for image in images]
        return np.concatenate([tensor for tensor, _ in done]), [p for _, p in done]

    def decode(self, outputs: Mapping[str, np.ndarray], layout: Any) -> list[list[Detection]]:
        return [
            decode({k: v[n] for k, v in outputs.items()}, placement, self.config)
            for n, placement in enumerate(layout)
        ]


class _InferBackend:
    """An ``Infer`` function as the ``models.inference.InferenceBackend`` a ``Runner``
    sends its rows through (one model: the model's name is not needed)."""

    def __init__(self, name: str, infer: Infer) -> None:
        self.name = name
        self._infer = infer

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer(inputs)

    def check_model(self, expected: ModelInfo) -> None:
        """Nothing to compare: ``ConfiguredModel.expected`` refuses first."""

    def close(self) -> None:
        """Nothing held: the session goes with this object, a given ``infer`` is the
        caller's to close."""


class ConfiguredDetector(Runner[list[Detection]]):
    """The configured model over onnxruntime in-process (default) or a given ``infer``
    (inputs → outputs by name; e.g. ``lambda x: backend.infer(name, x)`` for Triton):
    BGR images in, detections per image out, ``max_batch`` images a request (one at a
    time for a model exported at batch 1)."""

    def __init__(
        self,
        config: DetectorConfig,
        infer: Infer | None = None,
        *,
        max_batch: int = 16,
        threads: int = 1,
    ) -> None:
        self.config = config
        input_name, batched, name = config.input.name, True, "infer"
        if infer is None:
            infer, input_name, batched = _onnxruntime(config, threads)
            name = "onnxruntime"
        if input_name is None:
            raise DetectorConfigError(
                f"{config.name}: input.name is needed when an infer function is given"
            )
        super().__init__(
            _InferBackend(name, infer),
            ConfiguredModel(config, input_name),
            max_batch=max_batch if batched else 1,
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """BGR uint8 images → detections per image, in order."""
        return self.run(images)


def _onnxruntime(config: DetectorConfig, threads: int) -> tuple[Infer, str, bool]:
    """The configured model file in an onnxruntime session: its infer function, the input
    name (the configured one, else the model's first) and whether it takes batches."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(
            str(config.model_file), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own unrelated types)
        raise DetectorConfigError(
            f"{config.name}: onnxruntime cannot load {config.model_file}: {exc}"
        ) from exc
    first = session.get_inputs()[0]
    input_name = config.input.name or first.name
    names = [i.name for i in session.get_inputs()]
    if input_name not in names:
        raise DetectorConfigError(
            f"{config.name}: the model has no input {input_name!r} (it has {names})"
        )
    # A model exported at batch 1 is fed one image at a time.
    batched = not isinstance(first.shape[0], int) or first.shape[0] != 1
    outputs = [o.name for o in session.get_outputs()]

    def infer(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, dict(feed)), strict=True))

    return infer, input_name, batched
