"""The TensorFlow side of ``models.vision.convert``, run by the converter venv's Python
(``.cache/vision-convert-env``), never imported by our package: TensorFlow stays out of
the main environment. Needs only that venv's packages (tensorflow-cpu, tf2onnx, numpy).

    python tfjs_tools.py convert   MODEL_JSON OUTPUT_ONNX OPSET
    python tfjs_tools.py reference MODEL_JSON INPUT_NPY OUTPUT_NPZ

``convert`` runs tf2onnx on a TF.js graph model. ``reference`` runs the ORIGINAL graph
under TensorFlow: a TF.js graph model is a TensorFlow GraphDef in JSON with the constants'
values moved to the weight files, so the GraphDef is parsed with protobuf, each Const gets
its value back from the weights (read here, not by tf2onnx, so a mistake in tf2onnx's
reader cannot hide in both sides), and TensorFlow's own kernels run it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def convert(model_json: Path, output: Path, opset: int) -> None:
    # tf2onnx 1.17 still calls numpy.product, which numpy 2 removed.
    np.product = np.prod  # type: ignore[attr-defined]
    from tf2onnx import convert as tf2onnx_convert

    sys.argv = [
        "tf2onnx.convert", "--tfjs", str(model_json), "--output", str(output),
        "--opset", str(opset),
    ]  # fmt: skip
    tf2onnx_convert.main()


def read_weights(model_json: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every weight of a TF.js model, dequantised (float16-stored floats, uint8 ranges)."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for weight in group["weights"]:
            count = int(np.prod(weight["shape"], dtype=np.int64))
            quantization = weight.get("quantization")
            stored = np.dtype(quantization["dtype"] if quantization else weight["dtype"])
            array = np.frombuffer(data, dtype=stored, count=count, offset=offset)
            offset += array.nbytes
            if quantization and "scale" in quantization:
                array = array.astype(weight["dtype"]) * quantization["scale"] + quantization["min"]
            weights[weight["name"]] = array.astype(weight["dtype"]).reshape(weight["shape"])
        if offset != len(data):
            raise ValueError(f"{model_json}: weights use {offset} of {len(data)} bytes")
    return weights


def reference(model_json: Path, input_npy: Path, output_npz: Path) -> None:
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.framework import graph_pb2

    model = json.loads(model_json.read_text())
    graph_def = json_format.ParseDict(model["modelTopology"], graph_pb2.GraphDef())
    weights = read_weights(model_json, model["weightsManifest"])
    for node in graph_def.node:
        if node.op == "Const":
            # TF.js stores int64 constants as int32: back to the node's own dtype.
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            value = weights[node.name].astype(dtype.as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    inputs = list(model["signature"]["inputs"])
    outputs = list(model["signature"]["outputs"])
    if len(inputs) != 1:
        raise ValueError(f"{model_json}: expected one input, found {inputs}")
    with tf.compat.v1.Session(graph=graph) as session:
        results = session.run(outputs, {inputs[0]: np.load(input_npy)})
    np.savez(output_npz, **dict(zip(outputs, results, strict=True)))


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "convert":
        convert(Path(argv[1]), Path(argv[2]), int(argv[3]))
    elif len(argv) == 4 and argv[0] == "reference":
        reference(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
