"""The face detector at work: images in, faces per image out, BlazeFace run in-process by
onnxruntime or served by Triton (``blazeface``), through the runner and backends NanoDet
uses (``models.vision.detector``).

    place_in_repository(repository, FacePaths().model, SERVING)   # make models does it
    faces = build_face_detector(Settings())   # Triton first when CITYSTREAM_TRITON_URL is set
    faces.check()                             # the served model is the one we converted
    per_image = faces.detect([frame_a, frame_b, ...])   # [[Face(box, score), ...], ...]

An image gives one input row, or several when it is large (``models.vision.faces.views``:
the whole image and 512-pixel tiles); rows go to the model ``MAX_BATCH`` at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.export import ModelInfo
from models.inference import InferenceBackend, OnnxRuntimeBackend
from models.vision import faces
from models.vision.convert_faces import MODEL_NAME, MODEL_VERSION
from models.vision.detector import (
    MAX_BATCH,
    Runner,
    _triton,
    image_backend,
    image_model_info,
    image_serving,
)
from streams.settings import Settings

# A view takes about 3 ms on a CPU core: wait less than NanoDet does for more rows.
SERVING = image_serving(max_queue_delay_us=2000)


def expected_model() -> ModelInfo:
    """What the served model must be: our conversion's name, version and tensors."""
    outputs = []
    for stride, per_cell in faces.GRIDS:
        anchors = faces.anchors_of(stride, per_cell)
        outputs.append((faces.scores_output(stride), (anchors, 1)))
        outputs.append((faces.boxes_output(stride), (anchors, faces.REGRESSORS)))
    size = faces.INPUT_SIZE
    return image_model_info(MODEL_NAME, MODEL_VERSION, faces.INPUT_NAME, (size, size, 3), outputs)


@dataclass(frozen=True)
class FaceModel:
    """BlazeFace as a ``models.vision.detector.ImageModel``: views in, faces per image."""

    score_threshold: float = faces.SCORE_THRESHOLD
    iou_threshold: float = faces.IOU_THRESHOLD
    tile: int | None = faces.TILE
    name: str = MODEL_NAME
    input_name: str = faces.INPUT_NAME

    def expected(self) -> ModelInfo:
        return expected_model()

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, Any]:
        return faces.prepare(images, self.tile)

    def decode(self, outputs: Mapping[str, np.ndarray], layout: Any) -> list[list[faces.Face]]:
        return faces.decode_batch(outputs, layout, self.score_threshold, self.iou_threshold)


class FaceDetector(Runner[list[faces.Face]]):
    """BlazeFace over any inference backend: BGR images in, faces per image out."""

    def __init__(
        self,
        backend: InferenceBackend,
        model: FaceModel = FaceModel(),
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        super().__init__(backend, model, max_batch=max_batch)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[faces.Face]]:
        return self.run(images)


def in_process_face_detector(
    repository: Path, model: FaceModel = FaceModel(), intra_op_threads: int = 1
) -> FaceDetector:
    """onnxruntime in this process over ``<repository>/blazeface/1/model.onnx``."""
    return FaceDetector(OnnxRuntimeBackend(repository, intra_op_threads=intra_op_threads), model)


def triton_face_detector(
    url: str, model: FaceModel = FaceModel(), protocol: str = "grpc", retries: int = 1
) -> FaceDetector:
    """A Triton server's ``blazeface`` (gRPC by default)."""
    return FaceDetector(_triton(url, protocol, retries), model)


def build_face_detector(
    settings: Settings, model: FaceModel = FaceModel(), intra_op_threads: int = 1
) -> FaceDetector:
    """Triton when configured (in-process as fallback unless disabled), as NanoDet."""
    return FaceDetector(image_backend(settings, intra_op_threads), model)
