"""OCR at work: images in, lines of text per image out, detection and recognition run
in-process by onnxruntime or served by Triton (``ocr_det``, ``ocr_rec``), through the
backends every model of ours uses (``models.inference``).

    place_in_repository()                  # models/build/repository/ocr_det/, ocr_rec/
    reader = build_reader(Settings())      # Triton first when CITYSTREAM_TRITON_URL is set
    reader.check()                         # the served models are the ones we extracted
    lines = reader.read(image)             # [OcrLine(text, box, score), ...]
    small_ad, banner, evidence = classify_text(lines)

Detection runs one request per image size (images of the same size go together, e.g.
frames of one camera model). Recognition runs per image, as RapidOCR runs it: its lines
sorted by width, in batches of ``REC_BATCH``, each batch padded to its widest line. The
padding nudges the scores (by up to 0.02 seen here), so lines are never batched with
another image's: what an image reads does not depend on what else was sent with it.
Triton's dynamic batcher merges concurrent requests of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.export import ModelInfo, TensorSpec, read_model_info
from models.inference import (
    InferenceBackend,
    InferenceError,
    ModelMismatch,
    OnnxRuntimeBackend,
    TritonBackend,
)
from models.repository import ServingOptions, build_config, render_config, write_model_repository
from models.scoring import build_backend
from models.vision.convert import sha256_file
from models.vision.ocr import (
    OcrLine,
    OcrOptions,
    Prepared,
    classify_text,
    crop_line,
    ctc_decode,
    db_boxes,
    prepare,
    read_dictionary,
    rec_batch,
    sort_boxes,
    to_original,
)
from models.vision.ocr_models import (
    DET,
    DET_NAME,
    FETCH_HINT,
    INPUT,
    NUM_CLASSES,
    REC,
    REC_NAME,
    Paths,
    Served,
)
from streams.settings import Settings

# The most rows one request carries: images of one size to the detector, crops to the
# recogniser. Triton's start-up check wants both served models to take that many.
REQUEST_MAX_BATCH = 8
REC_BATCH = 6  # crops per recognition request: RapidOCR's, so the padding matches it
REC_MAX_BATCH = 32  # what Triton's dynamic batcher may merge from concurrent requests
DET_SERVING = ServingOptions(
    max_batch_size=REQUEST_MAX_BATCH,
    preferred_batch_sizes=(2, 4, 8),
    # Same-size frames of several cameras merge; a few ms is nothing against the
    # detector's 0.2-0.5 s on a CPU core.
    max_queue_delay_us=5000,
    warmup_dims=((INPUT, (3, 64, 64)),),
)
REC_SERVING = ServingOptions(
    max_batch_size=REC_MAX_BATCH,
    preferred_batch_sizes=(8, 16, 32),
    max_queue_delay_us=2000,
    warmup_dims=((INPUT, (3, 48, 320)),),
)
SERVING = {DET_NAME: DET_SERVING, REC_NAME: REC_SERVING}
# An image takes up to a second on a CPU core: the text models' 0.5 s would fail them all.
TRITON_TIMEOUT_S = 30.0


def _expected(
    served: Served, input_dims: tuple[int, ...], output_dims: tuple[int, ...]
) -> ModelInfo:
    return ModelInfo(
        name=served.name,
        version=served.version,
        labels=(),
        sequence_length=0,
        inputs=(TensorSpec(INPUT, "FP32", input_dims),),
        outputs=(TensorSpec(served.output, "FP32", output_dims),),
    )


def expected_models() -> tuple[ModelInfo, ModelInfo]:
    """What the served models must be: our extraction's names, versions and tensors
    (-1: a variable dimension)."""
    return (
        _expected(DET, (3, -1, -1), (1, -1, -1)),
        _expected(REC, (3, 48, -1), (-1, NUM_CLASSES)),
    )


def _model_files(paths: Paths) -> dict[str, Path]:
    files = {DET_NAME: paths.det, REC_NAME: paths.rec}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no OCR model at {', '.join(missing)}: {FETCH_HINT}")
    return files


def place_in_repository(repository: Path | None = None, paths: Paths | None = None) -> list[Path]:
    """Put ``ocr_det`` and ``ocr_rec`` into a Triton model repository: ``config.pbtxt``
    (onnxruntime backend, variable height/width, dynamic batching), ``configs/gpu.pbtxt``
    (the same on a GPU instance), ``configs/local.pbtxt`` (the Python backend the local
    tritonserver has). Returns the model directories; other models are left alone."""
    repository = repository or Settings().model_repository
    files = _model_files(paths or Paths())
    return [
        write_model_repository(repository, [path], SERVING[name])[0]
        for name, path in files.items()
    ]


def is_placed(repository: Path, paths: Paths | None = None) -> bool:
    """True when the repository already serves these files with this module's configs."""
    for name, path in _model_files(paths or Paths()).items():
        config = render_config(build_config(read_model_info(path), "cpu", SERVING[name]))
        try:
            current = (repository / name / "config.pbtxt").read_text()
        except OSError:
            return False
        if current != config or sha256_file(repository / name / "1" / "model.onnx") != sha256_file(
            path
        ):
            return False
    return True


class OcrReader:
    """PP-OCR over any inference backend: BGR images in, ``OcrLine``s per image out."""

    def __init__(
        self,
        backend: InferenceBackend,
        dictionary: Sequence[str] | None = None,
        *,
        options: OcrOptions | None = None,
        rec_batch_size: int = REC_BATCH,
    ) -> None:
        if not 1 <= rec_batch_size <= REQUEST_MAX_BATCH:
            raise ValueError(
                f"rec_batch_size must be 1..{REQUEST_MAX_BATCH}, got {rec_batch_size}"
            )
        self.backend = backend
        self.dictionary = tuple(dictionary or read_dictionary(Paths().dictionary))
        if len(self.dictionary) != NUM_CLASSES:
            raise ValueError(
                f"dictionary of {len(self.dictionary)} classes, expected {NUM_CLASSES}"
            )
        self.options = options or OcrOptions()
        self.rec_batch_size = rec_batch_size

    @property
    def name(self) -> str:
        return self.backend.name

    def check(self) -> None:
        """Raise ``ModelMismatch`` unless the backend holds our extracted models."""
        for info in expected_models():
            try:
                self.backend.check_model(info)
            except ModelMismatch as exc:
                raise ModelMismatch(f"{exc}; {FETCH_HINT}") from exc

    def _infer(self, served: Served, batch: np.ndarray) -> np.ndarray:
        output = self.backend.infer(served.name, {INPUT: batch}).get(served.output)
        if output is None:
            raise InferenceError(f"{served.name} gave no {served.output!r}")
        return np.asarray(output)

    def detect(self, prepared: Sequence[Prepared]) -> list[list[tuple[np.ndarray, float]]]:
        """Text boxes (in each prepared image) and scores, reading order, per image."""
        found: list[list[tuple[np.ndarray, float]]] = [[] for _ in prepared]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(prepared):
            by_shape.setdefault(item.det_input.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), REQUEST_MAX_BATCH):
                group = indices[start : start + REQUEST_MAX_BATCH]
                batch = np.concatenate([prepared[i].det_input for i in group])
                probs = self._infer(DET, batch)
                if probs.shape != (len(group), 1, *batch.shape[2:]):
                    raise InferenceError(f"{DET_NAME} answered {probs.shape} for {batch.shape}")
                for i, prob in zip(group, probs[:, 0], strict=True):
                    size = prepared[i].image.shape[:2]
                    found[i] = sort_boxes(db_boxes(prob, (size[0], size[1]), self.options))
        return found

    def recognise(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(text, score) per crop, in the given order."""
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        for start in range(0, len(order), self.rec_batch_size):
            chunk = order[start : start + self.rec_batch_size]
            batch = rec_batch([crops[i] for i in chunk], self.options.rec_min_width)
            probs = self._infer(REC, batch)
            if probs.ndim != 3 or probs.shape[0] != len(chunk):
                raise InferenceError(f"{REC_NAME} answered {probs.shape} for {batch.shape}")
            for i, result in zip(chunk, ctc_decode(probs, self.dictionary), strict=True):
                results[i] = result
        return results

    def read_many(self, images: Sequence[np.ndarray]) -> list[list[OcrLine]]:
        """The lines on each image (BGR, grey or BGRA uint8), in reading order; lines
        with no text or a score under ``options.text_score`` are left out."""
        prepared = [prepare(image, self.options) for image in images]
        results = []
        for item, found in zip(prepared, self.detect(prepared), strict=True):
            read = self.recognise([crop_line(item.image, box) for box, _ in found])
            results.append([
                OcrLine(text, to_original(box, item), score)
                for (box, _), (text, score) in zip(found, read, strict=True)
                if text.strip() and score >= self.options.text_score
            ])  # fmt: skip
        return results

    def read(self, image: np.ndarray) -> list[OcrLine]:
        return self.read_many([image])[0]

    def close(self) -> None:
        self.backend.close()


def in_process_reader(
    repository: Path, intra_op_threads: int = 1, paths: Paths | None = None
) -> OcrReader:
    """onnxruntime in this process over ``<repository>/ocr_{det,rec}/1/model.onnx``."""
    dictionary = read_dictionary((paths or Paths()).dictionary)
    return OcrReader(OnnxRuntimeBackend(repository, intra_op_threads=intra_op_threads), dictionary)


def triton_reader(
    url: str, protocol: str = "grpc", retries: int = 1, paths: Paths | None = None
) -> OcrReader:
    """A Triton server's ``ocr_det`` and ``ocr_rec`` (gRPC by default), no fallback."""
    backend = TritonBackend(
        url, protocol=protocol, timeout_s=TRITON_TIMEOUT_S, retries=retries,
        max_batch_size=REQUEST_MAX_BATCH,
    )  # fmt: skip
    return OcrReader(backend, read_dictionary((paths or Paths()).dictionary))


def build_reader(settings: Settings) -> OcrReader:
    """As the text models are served (``models.scoring.build_backend``): in-process without
    a Triton URL, else Triton, with the in-process models as fallback unless disabled;
    the Triton timeout raised to ``TRITON_TIMEOUT_S`` for images."""
    timeout = max(settings.triton_timeout_s, TRITON_TIMEOUT_S)
    backend = build_backend(
        settings.model_copy(update={"triton_timeout_s": timeout}),
        max_batch_size=REQUEST_MAX_BATCH,
    )
    return OcrReader(backend, read_dictionary(Paths().dictionary))


def read_image(path: Path) -> np.ndarray:
    """An image file as BGR; ``ValueError`` saying why when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no image file {path}")
    data = np.fromfile(path, dtype=np.uint8)  # cv2.imread fails silently on odd paths
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path} is not an image OpenCV can decode")
    return image


def ocr_record(source: str, lines: Sequence[OcrLine]) -> dict[str, object]:
    """One image's answer as the batch tool writes it."""
    small_ad, banner, _ = classify_text(lines)
    return {
        "source": source,
        "lines": [line.to_json() for line in lines],
        "small_ad": small_ad,
        "banner": banner,
    }
