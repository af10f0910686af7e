"""Export of our linear text models (hashed character n-grams) as small ONNX graphs.

The contract shared with the trainer and the serving side:

* inputs ``token_ids`` INT64 [batch, L] and ``token_weights`` FP32 [batch, L], L fixed,
  padding is id 0 with weight 0;
* logits[n] = sum_l token_weights[n, l] * W[token_ids[n, l], :] + b;
* output ``probabilities`` FP32 [batch, C] = softmax(logits / T).

Name, version, labels, sequence length, vocabulary size and temperature travel inside the
ONNX file (``metadata_props``), so a model file alone says what it is and serving can check
it against what the caller expects (``read_model_info``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_IDS = "token_ids"
INPUT_WEIGHTS = "token_weights"
OUTPUT_PROBABILITIES = "probabilities"

# Opset 17 / IR 8: run by onnxruntime >= 1.13 and by the ORT builds inside Triton 23.x+,
# so the same file serves in-process, in the local Python backend and in production.
OPSET = 17
IR_VERSION = 8

# Keys in metadata_props (prefixed so they cannot clash with keys added by other tools).
META_NAME = "citystream.name"
META_VERSION = "citystream.version"
META_LABELS = "citystream.labels"
META_SEQUENCE_LENGTH = "citystream.sequence_length"
META_VOCAB_SIZE = "citystream.vocab_size"
META_TEMPERATURE = "citystream.temperature"

# Triton model names become directory names and URL path segments.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

_ONNX_TO_TRITON = {TensorProto.INT64: "INT64", TensorProto.FLOAT: "FP32"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it: dims exclude the (dynamic) batch dimension."""

    name: str
    dtype: str  # Triton spelling: "INT64", "FP32"
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    labels: tuple[str, ...]
    sequence_length: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def expected_specs(
    sequence_length: int, num_classes: int
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs every text model has, for a given L and C."""
    inputs = (
        TensorSpec(INPUT_IDS, "INT64", (sequence_length,)),
        TensorSpec(INPUT_WEIGHTS, "FP32", (sequence_length,)),
    )
    outputs = (TensorSpec(OUTPUT_PROBABILITIES, "FP32", (num_classes,)),)
    return inputs, outputs


def _validate(
    name: str,
    version: str,
    weights: np.ndarray,
    bias: np.ndarray,
    temperature: float,
    labels: Sequence[str],
    sequence_length: int,
) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} must match {_NAME_RE.pattern} (Triton dir name)")
    if not version or version.strip() != version:
        raise ValueError(f"model version {version!r} must be non-empty, without outer spaces")
    if weights.ndim != 2 or weights.shape[0] < 1 or weights.shape[1] < 1:
        raise ValueError(f"weights must be [V, C] with V, C >= 1, got shape {weights.shape}")
    num_classes = weights.shape[1]
    if bias.shape != (num_classes,):
        raise ValueError(f"bias must have shape ({num_classes},), got {bias.shape}")
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for {num_classes} weight columns")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    for label in labels:
        # One label per line in Triton's label file.
        if not label or "\n" in label or "\r" in label:
            raise ValueError(f"label {label!r} must be non-empty and on one line")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ValueError("weights and bias must be finite")


def build_text_model(
    *,
    name: str,
    version: str,
    weights: np.ndarray,
    bias: np.ndarray,
    temperature: float,
    labels: Sequence[str],
    sequence_length: int,
) -> onnx.ModelProto:
    """The ONNX graph of one linear text model (see the module doc for the contract)."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    _validate(name, version, weights, bias, float(temperature), labels, sequence_length)
    vocab_size, num_classes = weights.shape

    initializers = [
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array(temperature, dtype=np.float32), "T"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
    ]
    nodes = [
        helper.make_node("Gather", ["W", INPUT_IDS], ["rows"], axis=0),  # [N, L, C]
        helper.make_node("Unsqueeze", [INPUT_WEIGHTS, "axis_2"], ["weights_3d"]),  # [N, L, 1]
        helper.make_node("Mul", ["rows", "weights_3d"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_1"], ["summed"], keepdims=0),  # [N, C]
        helper.make_node("Add", ["summed", "b"], ["logits"]),
        helper.make_node("Div", ["logits", "T"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], [OUTPUT_PROBABILITIES], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", sequence_length]),
            helper.make_tensor_value_info(
                INPUT_WEIGHTS, TensorProto.FLOAT, ["batch", sequence_length]
            ),
        ],
        outputs=[
            helper.make_tensor_value_info(
                OUTPUT_PROBABILITIES, TensorProto.FLOAT, ["batch", num_classes]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="citystream",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=f"{name} {version}: linear model over hashed character n-grams",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            META_NAME: name,
            META_VERSION: version,
            META_LABELS: json.dumps(list(labels), ensure_ascii=False),
            META_SEQUENCE_LENGTH: str(sequence_length),
            META_VOCAB_SIZE: str(vocab_size),
            META_TEMPERATURE: repr(float(temperature)),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_text_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` (one file, no external data: our models are < 100 MB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def _dims(value_info: onnx.ValueInfoProto, path: Path) -> tuple[int, ...]:
    shape = value_info.type.tensor_type.shape.dim
    if len(shape) < 1:
        raise ValueError(f"{path}: tensor {value_info.name!r} has no batch dimension")
    dims = []
    # The first dimension is the batch, dynamic by contract. Of the others, a named one
    # (``dim_param``: an image model's height or width) is variable, -1 as Triton writes
    # it; one with neither a value nor a name is an unknown the file should not have.
    for dim in shape[1:]:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(-1)
        else:
            raise ValueError(f"{path}: tensor {value_info.name!r} has an undeclared dimension")
    return tuple(dims)


def _spec(value_info: onnx.ValueInfoProto, path: Path) -> TensorSpec:
    elem_type = value_info.type.tensor_type.elem_type
    dtype = _ONNX_TO_TRITON.get(elem_type)
    if dtype is None:
        raise ValueError(
            f"{path}: tensor {value_info.name!r} has unsupported element type "
            f"{TensorProto.DataType.Name(elem_type)}"
        )
    return TensorSpec(value_info.name, dtype, _dims(value_info, path))


def model_info_from_proto(model: onnx.ModelProto, path: Path) -> ModelInfo:
    """ModelInfo from a loaded model; ``path`` only names the source in error messages."""
    meta = {prop.key: prop.value for prop in model.metadata_props}
    missing = [
        key
        for key in (META_NAME, META_VERSION, META_LABELS, META_SEQUENCE_LENGTH)
        if key not in meta
    ]
    if missing:
        raise ValueError(f"{path}: not a citystream text model, metadata lacks {missing}")
    labels = json.loads(meta[META_LABELS])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{path}: metadata {META_LABELS} is not a JSON list of strings")
    initializer_names = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializer_names]
    return ModelInfo(
        name=meta[META_NAME],
        version=meta[META_VERSION],
        labels=tuple(labels),
        sequence_length=int(meta[META_SEQUENCE_LENGTH]),
        inputs=tuple(_spec(i, path) for i in graph_inputs),
        outputs=tuple(_spec(o, path) for o in model.graph.output),
    )


def read_model_info(path: Path) -> ModelInfo:
    """What an exported model file says about itself (metadata and input/output specs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    return model_info_from_proto(onnx.load_model(str(path)), path)
