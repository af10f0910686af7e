"""The pretrained detector at work: images in, detections per image out, the model run
in-process by onnxruntime or served by Triton, through the backends every model of ours
uses (``models.inference``: onnxruntime, Triton over gRPC or HTTP, Triton with onnxruntime
as fallback).

    place_in_repository()                      # models/build/repository/nanodet/
    detector = build_detector(Settings())      # Triton first when CITYSTREAM_TRITON_URL is set
    detector.check()                           # the served model is the one we converted
    per_image = detector.detect([frame_a, frame_b, ...])

Frames of several cameras go in one call as one batch (up to ``MAX_BATCH``); Triton's
dynamic batcher also merges concurrent calls (``SERVING``).

``Runner`` is the part any image model shares (the face detector,
``models.vision.face_detector``, and an operator's configured detector,
``models.vision.detector_config``, too): an ``ImageModel`` says how images become input
rows and rows' outputs become results; the runner sends the rows in batches through the
backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from models.export import ModelInfo, TensorSpec, read_model_info
from models.inference import FallbackBackend, InferenceBackend, OnnxRuntimeBackend, TritonBackend
from models.repository import (
    ServingOptions,
    build_config,
    render_config,
    write_model_repository,
)
from models.vision import nanodet
from models.vision.convert import MODEL_NAME, MODEL_VERSION, Paths, sha256_file
from streams.settings import Settings

MAX_BATCH = 16


def image_serving(max_queue_delay_us: int) -> ServingOptions:
    """How Triton serves one of our image models: dynamic batches of up to ``MAX_BATCH``
    rows (cameras' frames merged), each request waiting at most ``max_queue_delay_us``
    for others to join it."""
    return ServingOptions(
        max_batch_size=MAX_BATCH,
        preferred_batch_sizes=(4, 8, 16),
        max_queue_delay_us=max_queue_delay_us,
    )


# A frame takes 30-60 ms on a CPU core: waiting 5 ms for other cameras' frames is cheap
# against that and fills batches.
SERVING = image_serving(max_queue_delay_us=5000)
# A batch of 16 takes about half a second on this 2-core CPU; the text models' 0.5 s
# Triton timeout would fail every full batch.
TRITON_TIMEOUT_S = 10.0


def image_model_info(
    name: str,
    version: str,
    input_name: str,
    input_dims: tuple[int, ...],
    outputs: Sequence[tuple[str, tuple[int, ...]]],
) -> ModelInfo:
    """What a served image model of ours must be: its name, version, one FP32 input of
    ``input_dims`` and FP32 ``outputs`` (name, dims), dimensions after the batch; no
    labels and no token sequence (what ``models.vision.convert.set_metadata`` writes)."""
    return ModelInfo(
        name=name,
        version=version,
        labels=(),
        sequence_length=0,
        inputs=(TensorSpec(input_name, "FP32", input_dims),),
        outputs=tuple(TensorSpec(output, "FP32", dims) for output, dims in outputs),
    )


def expected_model() -> ModelInfo:
    """What the served model must be: our conversion's name, version and tensors."""
    size, bins = nanodet.INPUT_SIZE, nanodet.EDGES * nanodet.REG_BINS
    outputs = []
    for stride in nanodet.STRIDES:
        cells = nanodet.grid_side(stride) ** 2
        outputs.append((nanodet.scores_output(stride), (cells, nanodet.NUM_CLASSES)))
        outputs.append((nanodet.bins_output(stride), (cells, bins)))
    return image_model_info(
        MODEL_NAME, MODEL_VERSION, nanodet.INPUT_NAME, (3, size, size), outputs
    )


def place_in_repository(
    repository: Path | None = None,
    model_file: Path | None = None,
    serving: ServingOptions = SERVING,
) -> Path:
    """Put a converted model (NanoDet by default) into a Triton model repository
    (``config.pbtxt`` for the onnxruntime backend with dynamic batching,
    ``configs/gpu.pbtxt``, ``configs/local.pbtxt``); returns the model's directory. Other
    models in the repository are left alone."""
    repository = repository or Settings().model_repository
    model_file = model_file or Paths().model
    if not model_file.is_file():
        raise FileNotFoundError(f"no converted model at {model_file}: run `make models`")
    return write_model_repository(repository, [model_file], serving)[0]


def is_placed(repository: Path, model_file: Path, serving: ServingOptions = SERVING) -> bool:
    """True when the repository already serves this file with this config."""
    info = read_model_info(model_file)
    model_dir = repository / info.name
    config = render_config(build_config(info, "cpu", serving))
    try:
        current = (model_dir / "config.pbtxt").read_text()
    except OSError:
        return False
    return current == config and sha256_file(model_dir / "1" / "model.onnx") == sha256_file(
        model_file
    )


T = TypeVar("T")


class ImageModel(Protocol[T]):
    """What a ``Runner`` needs of one image model: its served name and input, what the
    served model must be, images → input rows (with whatever ``decode`` needs to map the
    rows' outputs back: the layout), and the rows' outputs → one result per image."""

    @property
    def name(self) -> str: ...

    @property
    def input_name(self) -> str: ...

    def expected(self) -> ModelInfo: ...

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, Any]: ...

    def decode(self, outputs: Mapping[str, np.ndarray], layout: Any) -> list[T]: ...


class Runner(Generic[T]):
    """An image model over any inference backend: a list of BGR images in, one result per
    image out (same order). Images go ``max_batch`` at a time, and their input rows (an
    image may give several) in requests of at most ``max_batch`` rows."""

    def __init__(
        self, backend: InferenceBackend, model: ImageModel[T], *, max_batch: int = MAX_BATCH
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be 1..{MAX_BATCH}, got {max_batch}")
        self.backend = backend
        self.model = model
        self.max_batch = max_batch

    @property
    def name(self) -> str:
        return self.backend.name

    def check(self) -> None:
        """Raise ``ModelMismatch`` unless the backend holds our converted model."""
        self.backend.check_model(self.model.expected())

    def raw_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for preprocessed input rows, ``max_batch`` rows a request."""
        parts = [
            self.backend.infer(
                self.model.name, {self.model.input_name: batch[start : start + self.max_batch]}
            )
            for start in range(0, len(batch), self.max_batch)
        ]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def run(self, images: Sequence[np.ndarray]) -> list[T]:
        results: list[T] = []
        for start in range(0, len(images), self.max_batch):
            batch, layout = self.model.prepare(images[start : start + self.max_batch])
            results += self.model.decode(self.raw_outputs(batch), layout)
        return results

    def close(self) -> None:
        self.backend.close()


@dataclass(frozen=True)
class NanoDetModel:
    """NanoDet as an ``ImageModel``: images stretched to 416×416, detections per image."""

    score_threshold: float = nanodet.SCORE_THRESHOLD
    iou_threshold: float = nanodet.IOU_THRESHOLD
    name: str = MODEL_NAME
    input_name: str = nanodet.INPUT_NAME

    def expected(self) -> ModelInfo:
        return expected_model()

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, Any]:
        return nanodet.preprocess_batch(images)

    def decode(
        self, outputs: Mapping[str, np.ndarray], layout: Any
    ) -> list[list[nanodet.Detection]]:
        return nanodet.decode_batch(
            outputs, layout, score_threshold=self.score_threshold, iou_threshold=self.iou_threshold
        )


class Detector(Runner[list[nanodet.Detection]]):
    """NanoDet over any inference backend: a list of BGR images in, a list of detections
    per image out (same order). Larger lists go in batches of ``max_batch``."""

    def __init__(
        self,
        backend: InferenceBackend,
        *,
        max_batch: int = MAX_BATCH,
        score_threshold: float = nanodet.SCORE_THRESHOLD,
        iou_threshold: float = nanodet.IOU_THRESHOLD,
    ) -> None:
        super().__init__(backend, NanoDetModel(score_threshold, iou_threshold), max_batch=max_batch)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[nanodet.Detection]]:
        return self.run(images)


def in_process_detector(repository: Path, intra_op_threads: int = 1) -> Detector:
    """onnxruntime in this process over ``<repository>/nanodet/1/model.onnx``."""
    return Detector(OnnxRuntimeBackend(repository, intra_op_threads=intra_op_threads))


def triton_detector(url: str, protocol: str = "grpc", retries: int = 1) -> Detector:
    """A Triton server's ``nanodet`` (gRPC by default)."""
    return Detector(_triton(url, protocol, retries))


def _triton(url: str, protocol: str, retries: int) -> TritonBackend:
    return TritonBackend(
        url, protocol=protocol, timeout_s=TRITON_TIMEOUT_S, retries=retries,
        max_batch_size=MAX_BATCH,
    )  # fmt: skip


def image_backend(settings: Settings, intra_op_threads: int = 1) -> InferenceBackend:
    """As ``models.scoring.build_backend`` serves the text models: in-process without a
    Triton URL, else Triton, with the in-process model as fallback unless disabled. Its
    own backends, since images need a longer timeout and a batch limit of 16."""
    local = OnnxRuntimeBackend(
        settings.model_repository,
        providers=settings.onnx_providers,
        intra_op_threads=intra_op_threads,
    )
    if not settings.triton_url:
        return local
    triton = _triton(settings.triton_url, settings.triton_protocol, settings.triton_retries)
    return FallbackBackend(triton, local) if settings.triton_fallback else triton


def build_detector(settings: Settings, intra_op_threads: int = 1) -> Detector:
    """NanoDet over ``image_backend``: Triton when configured, in-process otherwise."""
    return Detector(image_backend(settings, intra_op_threads))
