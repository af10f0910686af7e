"""Small ONNX graphs for the conversion tests (test_vision_convert.py,
test_vision_convert_faces.py): a model put together as tf2onnx writes one (opset 13, one
float input), and onnxruntime runs of it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def tf2onnx_like_model(
    nodes: Sequence[onnx.NodeProto],
    input_name: str,
    input_shape: Sequence[int],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto],
    doc_string: str = "",
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "tfjs_model",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        list(outputs),
        list(initializers),
        doc_string=doc_string,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # what tf2onnx 1.17 writes at opset 13
    return model


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_all(model: onnx.ModelProto, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``batch`` (fed to its one input), by name."""
    run = session(model)
    names = [o.name for o in run.get_outputs()]
    return dict(zip(names, run.run(names, {run.get_inputs()[0].name: batch}), strict=True))
