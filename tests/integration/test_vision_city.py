"""The city-class model's graph surgery and configuration on the real converted NanoDet
(``models.vision.convert.build``, cached): the head extended to 86 classes keeps the 80
COCO outputs exactly, the head cut out for training computes the same outputs from the
neck's features, and the model described by ``nanodet-coco.json`` finds what the
committed ``Detector`` finds on bus.jpg. The fine-tuned model itself, where
``make models-city`` has built it, is checked against its stamp and configuration."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.inference import OnnxRuntimeBackend
from models.vision import city, convert, nanodet
from models.vision.detector import Detector
from models.vision.detector_config import ConfiguredDetector, load_detector_config

pytestmark = pytest.mark.integration

DETECTORS = Path(city.__file__).resolve().parent / "detectors"


@pytest.fixture(scope="module")
def base_model() -> onnx.ModelProto:
    return onnx.load(str(convert.build(log=lambda line: print(f"[vision] {line}"))))


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, feed)


def test_the_extended_head_keeps_the_coco_outputs(base_model: onnx.ModelProto) -> None:
    extended = city.extend_head(base_model, seed=1)
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 416, 416)).astype(np.float32)
    names = list(nanodet.OUTPUT_NAMES)
    before = run(base_model, {nanodet.INPUT_NAME: x}, names)
    after = run(extended, {nanodet.INPUT_NAME: x}, names)
    for name, old, new in zip(names, before, after, strict=True):
        if name.startswith("scores_"):
            assert new.shape == (*old.shape[:2], len(city.CLASS_NAMES))
            np.testing.assert_array_equal(new[..., : nanodet.NUM_CLASSES], old)
            # The new classes start near the prior.
            assert abs(float(new[..., nanodet.NUM_CLASSES :].mean()) - city.PRIOR) < 0.005
        else:
            np.testing.assert_array_equal(new, old)


def test_the_cut_head_computes_the_same_outputs_from_the_features(
    base_model: onnx.ModelProto,
) -> None:
    extended = city.extend_head(base_model, seed=1)
    levels = city.find_head(extended)
    feature_names = [level.input for level in levels]
    image = cv2.imread(str(convert.Paths().photo))
    x, _ = nanodet.preprocess(image)
    outputs = run(
        city.with_outputs(extended, feature_names),
        {nanodet.INPUT_NAME: x},
        [*nanodet.OUTPUT_NAMES, *feature_names],
    )
    full, features = outputs[: len(nanodet.OUTPUT_NAMES)], outputs[len(nanodet.OUTPUT_NAMES) :]
    head = city.cut_head(extended)
    assert [i.name for i in head.graph.input] == feature_names
    from_head = run(
        head, dict(zip(feature_names, features, strict=True)), list(nanodet.OUTPUT_NAMES)
    )
    for name, a, b in zip(nanodet.OUTPUT_NAMES, full, from_head, strict=True):
        if name.startswith("scores_"):
            b = 1 / (1 + np.exp(-b))  # the training head gives logits
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)


def test_the_coco_config_finds_what_the_detector_finds(
    base_model: onnx.ModelProto, tmp_path: Path
) -> None:
    config = load_detector_config(DETECTORS / "nanodet-coco.json")
    image = cv2.imread(str(convert.Paths().photo))
    ours = ConfiguredDetector(config).detect([image])[0]
    repository = tmp_path / "repository"
    (repository / convert.MODEL_NAME / "1").mkdir(parents=True)
    onnx.save(base_model, str(repository / convert.MODEL_NAME / "1" / "model.onnx"))
    theirs = Detector(OnnxRuntimeBackend(repository)).detect([image])[0]
    assert [(d.class_name, round(d.score, 4)) for d in ours] == [
        (d.class_name, round(d.score, 4)) for d in theirs
    ]
    np.testing.assert_allclose([d.box for d in ours], [d.box for d in theirs], atol=0.05)
    assert sum(d.class_name == "person" for d in ours) >= 4


def test_the_built_city_model_matches_its_stamp_and_config() -> None:
    paths = city.CityPaths()
    if not paths.model.is_file():
        pytest.skip(f"no {paths.model} (make models-city builds it, with a 5.5 GB torch venv)")
    stamp = json.loads(paths.stamp.read_text())
    assert convert.sha256_file(paths.model) == stamp["output_sha256"]
    config = load_detector_config(DETECTORS / "nanodet-city.json")
    model = onnx.load(str(paths.model))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["citystream.classes"]) == list(config.class_names)
    assert json.loads(meta["citystream.event_codes"]) == config.event_codes
    # A batch of 3 works and gives 86-class outputs.
    frames = [np.full((480, 640, 3), v, np.uint8) for v in (30, 120, 220)]
    assert len(ConfiguredDetector(config).detect(frames)) == 3
