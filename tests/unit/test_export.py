from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from models.export import (
    META_VERSION,
    OPSET,
    ModelInfo,
    TensorSpec,
    build_text_model,
    read_model_info,
    save_text_model,
)
from models.repository import (
    PYTHON_MODEL_TEMPLATE,
    VERSION_PARAMETER,
    ServingOptions,
    parse_config,
    write_model_repository,
)

L = 1024


def make_weights(vocab: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0, 2, (vocab, classes)).astype(np.float32),
        rng.normal(0, 1, classes).astype(np.float32),
    )


def make_batch(rows: int, vocab: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (rows, L)).astype(np.int64)
    weights = rng.random((rows, L)).astype(np.float32)
    # Like the featuriser: a varying tail of padding (id 0, weight 0), weights L2-normalised.
    for n, used in enumerate(rng.integers(1, L, rows)):
        ids[n, used:] = 0
        weights[n, used:] = 0.0
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    return ids, weights


def reference(ids, weights, w, b, temperature):
    logits = (weights[:, :, None].astype(np.float64) * w[ids].astype(np.float64)).sum(1) + b
    scaled = logits / temperature
    e = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build(name="event_classifier", version="2024.1", vocab=2**16, classes=45, temperature=1.7):
    w, b = make_weights(vocab, classes)
    labels = [f"code_{i:02d}" for i in range(classes)]
    model = build_text_model(
        name=name,
        version=version,
        weights=w,
        bias=b,
        temperature=temperature,
        labels=labels,
        sequence_length=L,
    )
    return model, w, b, labels


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_outputs_equal_numpy_reference():
    model, w, b, _ = build(temperature=1.7)
    ids, weights = make_batch(32, 2**16)
    (probs,) = session(model).run(None, {"token_ids": ids, "token_weights": weights})
    assert probs.shape == (32, 45) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, reference(ids, weights, w, b, 1.7), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_temperature_changes_the_output():
    model_a, *_ = build(temperature=1.0)
    model_b, *_ = build(temperature=3.0)
    ids, weights = make_batch(4, 2**16)
    feeds = {"token_ids": ids, "token_weights": weights}
    (a,) = session(model_a).run(None, feeds)
    (b,) = session(model_b).run(None, feeds)
    # Same argmax, flatter distribution at the higher temperature.
    assert (a.argmax(1) == b.argmax(1)).all()
    assert (b.max(1) < a.max(1)).all()


def test_batch_of_one_equals_rows_of_batch_of_32():
    model, *_ = build(vocab=2**17, classes=20)
    sess = session(model)
    ids, weights = make_batch(32, 2**17, seed=7)
    (batch,) = sess.run(None, {"token_ids": ids, "token_weights": weights})
    for n in (0, 13, 31):
        (one,) = sess.run(None, {"token_ids": ids[n : n + 1], "token_weights": weights[n : n + 1]})
        np.testing.assert_allclose(one[0], batch[n], rtol=1e-5, atol=1e-6)


def test_padding_contributes_nothing():
    model, w, b, _ = build(vocab=1000, classes=5)
    ids = np.zeros((1, L), np.int64)
    weights = np.zeros((1, L), np.float32)
    (probs,) = session(model).run(None, {"token_ids": ids, "token_weights": weights})
    np.testing.assert_allclose(probs[0], reference(ids, weights, w, b, 1.7)[0], rtol=1e-5)


def test_metadata_round_trips(tmp_path: Path):
    labels_zh = [f"单位{i}" for i in range(20)]
    w, b = make_weights(2**10, 20)
    model = build_text_model(
        name="dispatch_router",
        version="r-7",
        weights=w,
        bias=b,
        temperature=0.9,
        labels=labels_zh,
        sequence_length=L,
    )
    path = save_text_model(model, tmp_path / "m" / "router.onnx")
    info = read_model_info(path)
    assert info == ModelInfo(
        name="dispatch_router",
        version="r-7",
        labels=tuple(labels_zh),
        sequence_length=L,
        inputs=(TensorSpec("token_ids", "INT64", (L,)), TensorSpec("token_weights", "FP32", (L,))),
        outputs=(TensorSpec("probabilities", "FP32", (20,)),),
    )
    loaded = onnx.load(str(path))
    assert loaded.opset_import[0].version == OPSET
    # The batch dimension is dynamic.
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad/name"}, "model name"),
        ({"version": ""}, "version"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"labels": ["a"] * 5}, "unique"),
        ({"labels": ["a", "b"]}, "labels for 5"),
        ({"bias": np.zeros(4, np.float32)}, "bias"),
        ({"weights": np.zeros(10, np.float32)}, "weights"),
        ({"sequence_length": 0}, "sequence_length"),
    ],
)
def test_invalid_arguments_are_rejected(change, message):
    w, b = make_weights(100, 5)
    args = {
        "name": "m",
        "version": "1",
        "weights": w,
        "bias": b,
        "temperature": 1.0,
        "labels": list("abcde"),
        "sequence_length": 8,
    }
    with pytest.raises(ValueError, match=message):
        build_text_model(**(args | change))


def test_read_model_info_rejects_foreign_model(tmp_path: Path):
    model, *_ = build(vocab=100, classes=3)
    del model.metadata_props[:]
    path = save_text_model(model, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="not a citystream text model"):
        read_model_info(path)
    with pytest.raises(FileNotFoundError):
        read_model_info(tmp_path / "missing.onnx")


# ---------------------------------------------------------------------- model repository


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, list[Path]]:
    paths = []
    for name, classes in (("event_classifier", 45), ("dispatch_router", 20)):
        model, *_ = build(name=name, version=f"{name}-v3", vocab=2**10, classes=classes)
        paths.append(save_text_model(model, tmp_path / "onnx" / f"{name}.onnx"))
    root = tmp_path / "repo"
    write_model_repository(root, paths)
    return root, paths


def test_repository_layout(repository):
    root, paths = repository
    for name, classes in (("event_classifier", 45), ("dispatch_router", 20)):
        model_dir = root / name
        assert (model_dir / "1" / "model.onnx").read_bytes() == (
            root.parent / "onnx" / f"{name}.onnx"
        ).read_bytes()
        assert (model_dir / "1" / "model.py").read_text() == PYTHON_MODEL_TEMPLATE.read_text()
        labels = (model_dir / "labels.txt").read_text().splitlines()
        assert labels == [f"code_{i:02d}" for i in range(classes)]
        for config_file in ("config.pbtxt", "configs/gpu.pbtxt", "configs/local.pbtxt"):
            assert (model_dir / config_file).is_file()


def test_configs_parse_back_with_required_fields(repository):
    root, _ = repository
    model_dir = root / "event_classifier"
    production = parse_config((model_dir / "config.pbtxt").read_text())
    gpu = parse_config((model_dir / "configs" / "gpu.pbtxt").read_text())
    local = parse_config((model_dir / "configs" / "local.pbtxt").read_text())

    assert production.backend == gpu.backend == "onnxruntime"
    assert local.backend == "python"
    assert production.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert local.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    for config in (production, gpu, local):
        assert config.name == "event_classifier"
        assert config.max_batch_size == 64
        assert list(config.dynamic_batching.preferred_batch_size) == [16, 32, 64]
        assert 1000 <= config.dynamic_batching.max_queue_delay_microseconds <= 5000
        assert config.parameters[VERSION_PARAMETER].string_value == "event_classifier-v3"
        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
            ("token_ids", mc.TYPE_INT64, [L]),
            ("token_weights", mc.TYPE_FP32, [L]),
        ]
        (output,) = config.output
        assert (output.name, output.data_type, list(output.dims)) == (
            "probabilities",
            mc.TYPE_FP32,
            [45],
        )
        assert output.label_filename == "labels.txt"
    # Same IO everywhere: only backend and instance kind differ.
    assert local.input == production.input and local.output == production.output


def test_parse_config_rejects_unknown_fields():
    with pytest.raises(text_format.ParseError):
        parse_config('name: "x"\nmax_batch_sise: 4\n')


def test_repository_rewrite_replaces_model_and_rejects_duplicate_names(tmp_path, repository):
    root, paths = repository
    (root / "event_classifier" / "1" / "stale.bin").write_bytes(b"old")
    model, *_ = build(name="event_classifier", version="v4", vocab=2**10, classes=45)
    newer = save_text_model(model, tmp_path / "newer.onnx")
    write_model_repository(root, [newer])
    assert not (root / "event_classifier" / "1" / "stale.bin").exists()
    assert read_model_info(root / "event_classifier" / "1" / "model.onnx").version == "v4"
    config = parse_config((root / "event_classifier" / "config.pbtxt").read_text())
    assert config.parameters[VERSION_PARAMETER].string_value == "v4"
    with pytest.raises(ValueError, match="same model name"):
        write_model_repository(tmp_path / "other", [paths[0], newer])


def test_serving_options_are_validated():
    with pytest.raises(ValueError, match="preferred batch sizes"):
        ServingOptions(max_batch_size=8, preferred_batch_sizes=(16,))
    options = ServingOptions(max_batch_size=8, preferred_batch_sizes=(4, 8))
    assert dataclasses.replace(options, cpu_instances=2).cpu_instances == 2


def test_model_file_version_is_in_metadata(repository):
    root, _ = repository
    loaded = onnx.load(str(root / "dispatch_router" / "1" / "model.onnx"))
    meta = {p.key: p.value for p in loaded.metadata_props}
    assert meta[META_VERSION] == "dispatch_router-v3"
