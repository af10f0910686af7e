"""models.vision.detector_config: the loader's errors, the three output formats decoded
from synthetic outputs whose boxes are known, and an operator's YOLOv8-format ONNX model
(built here with onnx.helper) dropped in by a configuration file alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.vision import compose, nanodet
from models.vision.detector_config import (
    ConfiguredDetector,
    DetectorConfig,
    DetectorConfigError,
    InputSpec,
    candidates_yolov5,
    candidates_yolov8,
    decode,
    load_detector_config,
    preprocess,
)
from models.vision.nanodet import Placement

DETECTORS = Path(__file__).resolve().parents[2] / "models" / "vision" / "detectors"
TAXONOMY = Path(__file__).resolve().parents[3] / "shared" / "domain" / "qingdao.json"
CLASSES = ("pothole", "garbage_pile", "person")


def yolo_config(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "operator-yolo",
        "model_path": "model.onnx",
        "input": {"width": 64, "height": 64},
        "output_format": "yolov8",
        "score_threshold": 0.3,
        "class_names": list(CLASSES),
        "event_codes": {"pothole": "E03", "garbage_pile": "A01"},
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, data: Any, name: str = "detector.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def config_of(**overrides: Any) -> DetectorConfig:
    return DetectorConfig.model_validate(yolo_config(**overrides))


IDENTITY = Placement(64, 64, 1.0, 1.0)


# ------------------------------------------------------------------------------ loading


def test_shipped_nanodet_configs_describe_our_models() -> None:
    coco = load_detector_config(DETECTORS / "nanodet-coco.json", require_model=False)
    city = load_detector_config(DETECTORS / "nanodet-city.json", require_model=False)
    assert coco.class_names == nanodet.COCO_CLASSES
    assert city.class_names == (*nanodet.COCO_CLASSES, *compose.CITY_CLASSES)
    for config in (coco, city):
        assert (config.input.width, config.input.height) == (nanodet.INPUT_SIZE,) * 2
        assert config.input.mean == pytest.approx(nanodet.MEAN.tolist())
        assert config.input.std == pytest.approx(nanodet.STD.tolist())
        assert config.input.channels == "BGR" and config.input.resize == "stretch"
        assert config.nanodet.strides == nanodet.STRIDES
        assert config.nanodet.reg_bins == nanodet.REG_BINS
    assert city.event_codes == compose.CITY_CODES
    assert coco.model_file == (DETECTORS.parents[1] / "build" / "vision" / "nanodet.onnx")


@pytest.mark.skipif(not TAXONOMY.is_file(), reason=f"no domain file at {TAXONOMY}")
def test_city_codes_are_in_the_taxonomy() -> None:
    known = [event["code"] for event in json.loads(TAXONOMY.read_text())["taxonomy"]]
    load_detector_config(DETECTORS / "nanodet-city.json", require_model=False).check_codes(known)
    with pytest.raises(DetectorConfigError, match=r"not in the taxonomy: \['E03'\]"):
        config_of().check_codes(["A01"])


def test_loader_reports_each_problem(tmp_path: Path) -> None:
    with pytest.raises(DetectorConfigError, match="no detector configuration"):
        load_detector_config(tmp_path / "absent.json")
    with pytest.raises(DetectorConfigError, match="not valid JSON"):
        load_detector_config(write(tmp_path, "{not json"))
    with pytest.raises(DetectorConfigError, match="must hold a JSON object"):
        load_detector_config(write(tmp_path, [1, 2]))
    with pytest.raises(DetectorConfigError, match="model file .* does not exist"):
        load_detector_config(write(tmp_path, yolo_config()))
    with pytest.raises(DetectorConfigError, match="base_dir is set by the loader"):
        load_detector_config(write(tmp_path, yolo_config(base_dir="/")), require_model=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output_format": "ssd"}, "output_format"),
        ({"class_names": ["a", "a"]}, "class names repeat"),
        ({"class_names": []}, "class_names"),
        ({"event_codes": {"cat": "A01"}}, "classes the model does not have: \\['cat'\\]"),
        ({"event_codes": {"pothole": "pothole"}}, "must look like 'A01'"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"input": {"width": 64, "height": 64, "std": [1, 0, 1]}}, "std must be positive"),
        ({"input": {"width": 64, "height": 64, "size": 3}}, "input.size"),
        (
            {"output_format": "nanodet", "input": {"width": 100, "height": 64}},
            "multiple of every stride",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_configs_say_what_is_wrong(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(DetectorConfigError, match=message):
        load_detector_config(write(tmp_path, yolo_config(**overrides)), require_model=False)


def test_model_path_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.onnx").write_bytes(b"")
    config = load_detector_config(write(tmp_path / "sub", yolo_config()))
    assert config.model_file == tmp_path / "sub" / "model.onnx"
    assert config.event_code("pothole") == "E03" and config.event_code("person") is None


# ------------------------------------------------------------------------ preprocessing


def test_letterbox_rgb_scaled_input_and_placement() -> None:
    image = np.zeros((64, 128, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    spec = InputSpec(width=64, height=64)  # RGB, /255, letterbox, grey 114 bars
    tensor, placement = preprocess(image, spec)
    assert tensor.shape == (1, 3, 64, 64)
    assert (placement.scale_x, placement.scale_y, placement.pad_x, placement.pad_y) == (
        0.5,
        0.5,
        0,
        16,
    )
    assert tensor[0, 2, 32, 32] == pytest.approx(1.0)  # blue is the last RGB channel
    assert tensor[0, 0, 32, 32] == pytest.approx(0.0)
    assert tensor[0, 1, 0, 0] == pytest.approx(114 / 255)  # the bar
    nhwc, _ = preprocess(image, InputSpec(width=64, height=64, layout="NHWC", resize="stretch"))
    assert nhwc.shape == (1, 64, 64, 3)


# ----------------------------------------------------------------------------- decoding


def yolov8_output(
    boxes: list[tuple[float, float, float, float]],
    classes: list[int],
    scores: list[float],
    anchors: int = 50,
) -> np.ndarray:
    """[4 + C, A]: the given boxes (x1, y1, x2, y2) as (cx, cy, w, h) in the first anchors."""
    out = np.zeros((4 + len(CLASSES), anchors), np.float32)
    out[:4] = 1.0  # empty anchors: tiny boxes with zero scores
    for a, ((x1, y1, x2, y2), c, s) in enumerate(zip(boxes, classes, scores, strict=True)):
        out[:4, a] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        out[4 + c, a] = s
    return out


def test_yolov8_decoding_gives_the_boxes_back() -> None:
    out = yolov8_output([(4, 8, 20, 30), (30, 30, 60, 50)], [0, 2], [0.9, 0.6])
    found = decode({"output0": out}, IDENTITY, config_of())
    assert [(d.class_name, round(d.score, 3), d.box) for d in found] == [
        ("pothole", 0.9, (4.0, 8.0, 20.0, 30.0)),
        ("person", 0.6, (30.0, 30.0, 60.0, 50.0)),
    ]
    # Transposed exports ([A, 4 + C]) decode the same.
    assert decode({"output0": out.T}, IDENTITY, config_of()) == found


def test_yolo_nms_threshold_and_limit() -> None:
    out = yolov8_output(
        [(4, 4, 24, 24), (5, 5, 25, 25), (40, 40, 60, 60), (4, 4, 24, 24)],
        [0, 0, 0, 1],
        [0.9, 0.8, 0.2, 0.7],
    )
    found = decode({"output0": out}, IDENTITY, config_of())
    # The 0.8 twin is suppressed, 0.2 is under the threshold, another class's box stays.
    assert [(d.class_name, round(d.score, 2)) for d in found] == [
        ("pothole", 0.9),
        ("garbage_pile", 0.7),
    ]
    assert len(decode({"output0": out}, IDENTITY, config_of(max_detections=1))) == 1


def test_yolov5_multiplies_objectness() -> None:
    rows = np.zeros((10, 5 + len(CLASSES)), np.float32)
    rows[0, :5] = (20, 20, 10, 10, 0.5)
    rows[0, 5 + 1] = 0.9  # 0.45 after objectness
    rows[1, :5] = (40, 40, 10, 10, 0.2)
    rows[1, 5 + 0] = 0.9  # 0.18: under 0.3
    boxes, scores = candidates_yolov5(rows, len(CLASSES))
    np.testing.assert_allclose(boxes[0], [15, 15, 25, 25])
    found = decode({"out": rows}, IDENTITY, config_of(output_format="yolov5"))
    assert [(d.class_name, round(d.score, 3), d.box) for d in found] == [
        ("garbage_pile", 0.45, (15.0, 15.0, 25.0, 25.0))
    ]


def test_yolo_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="no axis of 7"):
        candidates_yolov8(np.zeros((6, 20)), len(CLASSES))
    with pytest.raises(ValueError, match="2-D per image"):
        candidates_yolov8(np.zeros((1, 7, 20)), len(CLASSES))
    with pytest.raises(ValueError, match="no output 'boxes'"):
        decode({"output0": np.zeros((7, 5))}, IDENTITY, config_of(output="boxes"))


def test_nanodet_format_with_more_classes() -> None:
    """A nanodet-layout output of 3 classes at 64×64: one cell whose bins peak at known
    distances gives its box."""
    config = config_of(output_format="nanodet", input={"width": 64, "height": 64})
    outputs = {}
    for stride in (8, 16, 32):
        cells = (64 // stride) ** 2
        outputs[f"scores_{stride}"] = np.zeros((cells, 3), np.float32)
        outputs[f"bins_{stride}"] = np.zeros((cells, 44), np.float32)
    cell, stride = 2 * 4 + 1, 16  # row 2, column 1 of the 4×4 grid: centre (24, 40)
    outputs["scores_16"][cell, 1] = 0.8
    bins = np.zeros((4, 11), np.float32)
    for edge, k in enumerate((1, 2, 1, 0)):
        bins[edge, k] = 60.0
    outputs["bins_16"][cell] = bins.reshape(-1)
    found = decode(outputs, IDENTITY, config)
    assert len(found) == 1 and found[0].class_name == "garbage_pile"
    np.testing.assert_allclose(found[0].box, (24 - 16, 40 - 32, 24 + 16, 40), atol=1e-6)
    with pytest.raises(ValueError, match="stride 8: expected scores"):
        decode({**outputs, "scores_8": np.zeros((16, 3))}, IDENTITY, config)


# ------------------------------------------------------------- an operator's ONNX model


def tiny_yolov8_model(known: np.ndarray) -> onnx.ModelProto:
    """images [N, 3, 64, 64] → output0 [N, 4 + C, A] = ``known`` for every image (plus 0 ×
    the image's mean, so the output depends on the input and has its batch)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "known"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "operator_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", *known.shape])],
        [
            numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(known[np.newaxis].astype(np.float32), "known"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def test_an_operator_yolov8_model_drops_in_by_configuration(tmp_path: Path) -> None:
    # Boxes in the 64×64 input; frames are 128×64, letterboxed at scale 0.5 with 16 px
    # bars above and below, so in the frame they are (x / 0.5, (y - 16) / 0.5).
    known = yolov8_output([(8, 20, 24, 40), (30, 18, 62, 46)], [0, 1], [0.92, 0.55])
    onnx.save(tiny_yolov8_model(known), str(tmp_path / "model.onnx"))
    path = write(tmp_path, yolo_config())
    detector = ConfiguredDetector(load_detector_config(path))
    frames = [np.full((64, 128, 3), v, np.uint8) for v in (0, 90, 200)]
    per_frame = detector.detect(frames)
    assert len(per_frame) == 3
    for found in per_frame:
        assert [(d.class_name, round(d.score, 2)) for d in found] == [
            ("pothole", 0.92),
            ("garbage_pile", 0.55),
        ]
        np.testing.assert_allclose(found[0].box, (16, 8, 48, 48), atol=1e-4)
        np.testing.assert_allclose(found[1].box, (60, 4, 124, 60), atol=1e-4)
    assert [detector.config.event_code(d.class_name) for d in per_frame[0]] == ["E03", "A01"]


def test_a_model_onnxruntime_cannot_load_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    config = load_detector_config(write(tmp_path, yolo_config()))
    with pytest.raises(DetectorConfigError, match="onnxruntime cannot load"):
        ConfiguredDetector(config)
    with pytest.raises(DetectorConfigError, match="no input 'pixels'"):
        onnx.save(tiny_yolov8_model(yolov8_output([], [], [])), str(tmp_path / "model.onnx"))
        ConfiguredDetector(
            load_detector_config(
                write(tmp_path, yolo_config(input={"name": "pixels", "width": 64, "height": 64}))
            )
        )
