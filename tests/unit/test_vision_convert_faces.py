"""models.vision.convert_faces without the network or TensorFlow: the JSON patch, the
batch patch and the tensor names on a small graph built like tf2onnx's BlazeFace head,
and the stamp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.vision import convert_faces, faces
from models.vision.convert import ConversionError
from models.vision.convert_faces import (
    FacePaths,
    declare_tensors,
    is_current,
    make_batch_dynamic,
    patch_tfjs,
)
from tests.unit.vision_onnx import run_all, tf2onnx_like_model

# (stride, anchors per cell, width) of each output, as the TF.js signature names them.
HEADS = {
    "Identity:0": (16, 2, 1),
    "Identity_2:0": (16, 2, 16),
    "Identity_1:0": (32, 6, 1),
    "Identity_3:0": (32, 6, 16),
}


def signature() -> dict:
    def dims(*sizes: int) -> dict:
        return {"tensorShape": {"dim": [{"size": str(s)} for s in sizes]}}

    outputs = {
        name: dims(1, faces.anchors_of(stride, per_cell), width)
        for name, (stride, per_cell, width) in HEADS.items()
    }
    return {"inputs": {"input:0": dims(1, 256, 256, 3)}, "outputs": outputs}


def tf2onnx_like_graph(seed: int = 0) -> onnx.ModelProto:
    """BlazeFace's heads in miniature: NHWC input → NCHW, per grid a pooled 1×1 conv,
    back to NHWC, and a Reshape to [1, anchors, width] with a constant batch-1 shape."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Transpose", ["input:0"], ["nchw"], perm=[0, 3, 1, 2])]
    inits, outputs = [], []
    for k, (name, (stride, per_cell, width)) in enumerate(HEADS.items()):
        channels = per_cell * width
        weight = rng.normal(0, 1, (channels, 3, 1, 1)).astype(np.float32)
        shape = np.array([1, faces.anchors_of(stride, per_cell), width], np.int64)
        inits += [numpy_helper.from_array(weight, f"w{k}"), numpy_helper.from_array(shape, f"s{k}")]
        nodes += [
            helper.make_node("AveragePool", ["nchw"], [f"p{k}"], kernel_shape=[stride, stride],
                             strides=[stride, stride]),
            helper.make_node("Conv", [f"p{k}", f"w{k}"], [f"c{k}"]),
            helper.make_node("Transpose", [f"c{k}"], [f"t{k}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"t{k}", f"s{k}"], [name]),
        ]  # fmt: skip
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return tf2onnx_like_model(nodes, "input:0", [1, 256, 256, 3], outputs, inits)


def test_the_patched_graph_takes_any_batch_under_our_names():
    model = tf2onnx_like_graph()
    one = np.random.default_rng(1).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    before = run_all(model, one)
    assert make_batch_dynamic(model) == 4
    names = declare_tensors(model, signature())
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == list(faces.OUTPUT_NAMES)
    assert names["Identity_3:0"] == "boxes_32" and names["input:0"] == "image"
    batch = np.concatenate([one, np.zeros_like(one), one])
    after = run_all(model, batch)
    for original, ours in names.items():
        if ours != faces.INPUT_NAME:
            assert after[ours].shape[0] == 3
            np.testing.assert_allclose(after[ours][0], before[original][0], atol=1e-5)
            np.testing.assert_allclose(after[ours][2], before[original][0], atol=1e-5)


def test_a_graph_that_is_not_blazeface_is_refused():
    model = tf2onnx_like_graph()
    model.graph.node[-1].input[1] = "nchw"  # a Reshape whose shape is no constant
    with pytest.raises(ConversionError, match="no constant shape"):
        make_batch_dynamic(model)
    model = tf2onnx_like_graph()
    wrong = signature()
    wrong["outputs"]["Identity:0"]["tensorShape"]["dim"][1]["size"] = "500"
    with pytest.raises(ConversionError, match="unexpected shape"):
        declare_tensors(model, wrong)


def test_patch_tfjs_declares_targs_and_the_signature_and_copies_the_weights(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "m.bin").write_bytes(b"\x00" * 8)
    fused = {"T": {"type": "DT_FLOAT"}, "num_args": {"i": "1"}}
    model = {
        "modelTopology": {"node": [
            {"name": "conv", "op": "_FusedConv2D", "attr": fused},
            {"name": "x", "op": "Placeholder", "attr": {}},
        ]},
        "weightsManifest": [{"paths": ["m.bin"], "weights": []}],
        "userDefinedMetadata": {"signature": signature()},
    }  # fmt: skip
    (source / "m.json").write_text(json.dumps(model))
    out = patch_tfjs(source / "m.json", tmp_path / "patched")
    patched = json.loads(out.read_text())
    assert patched["modelTopology"]["node"][0]["attr"]["TArgs"] == {"list": {"type": ["DT_FLOAT"]}}
    assert patched["signature"] == signature()
    assert (tmp_path / "patched" / "m.bin").read_bytes() == b"\x00" * 8
    model["modelTopology"]["node"] = model["modelTopology"]["node"][1:]
    (source / "m.json").write_text(json.dumps(model))
    with pytest.raises(ConversionError, match="no _FusedConv2D"):
        patch_tfjs(source / "m.json", tmp_path / "again")


def test_a_build_is_current_only_with_a_matching_stamp(tmp_path: Path):
    paths = FacePaths(tmp_path)
    assert not is_current(paths)
    paths.build.mkdir(parents=True)
    paths.model.write_bytes(b"model")
    (paths.tfjs).mkdir()
    (paths.tfjs / "blazeface-back.json").write_text("{}")
    stamp = {
        "recipe": convert_faces.recipe(),
        "output_sha256": convert_faces.sha256_file(paths.model),
        "source_sha256": {
            "blazeface-back.json": convert_faces.sha256_file(paths.tfjs / "blazeface-back.json")
        },
    }
    paths.stamp.write_text(json.dumps(stamp))
    assert is_current(paths)
    paths.model.write_bytes(b"another model")
    assert not is_current(paths)
    stamp["output_sha256"] = convert_faces.sha256_file(paths.model)
    stamp["recipe"] = {**convert_faces.recipe(), "recipe": 0}
    paths.stamp.write_text(json.dumps(stamp))
    assert not is_current(paths)


def test_the_check_photo_is_the_pinned_one_in_the_matplotlib_wheel():
    photo = convert_faces.read_photo(FacePaths())
    assert photo.shape == (600, 512, 3)
