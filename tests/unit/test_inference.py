from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.export import ModelInfo, TensorSpec, read_model_info, save_text_model
from models.inference import (
    BackendUnavailable,
    FallbackBackend,
    InferenceError,
    ModelMismatch,
    OnnxRuntimeBackend,
    ServedModel,
    TritonBackend,
    model_differences,
    served_model_from_config,
)
from models.repository import write_model_repository
from tests.unit.test_export import build, make_batch, reference

VOCAB = 2**12


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("inference")
    built = {}
    paths = []
    for name, classes in (("event_classifier", 45), ("dispatch_router", 20)):
        model, w, b, _ = build(name=name, version="v1", vocab=VOCAB, classes=classes)
        paths.append(save_text_model(model, tmp / "onnx" / f"{name}.onnx"))
        built[name] = (w, b)
    root = tmp / "repo"
    write_model_repository(root, paths)
    return {"root": root, "weights": built}


def feeds(rows: int, seed: int = 3) -> dict[str, np.ndarray]:
    ids, weights = make_batch(rows, VOCAB, seed=seed)
    return {"token_ids": ids, "token_weights": weights}


def info_of(repo, name: str) -> ModelInfo:
    return read_model_info(repo["root"] / name / "1" / "model.onnx")


# --------------------------------------------------------------------------- onnxruntime


def test_ort_backend_matches_numpy_and_loads_lazily(repo):
    backend = OnnxRuntimeBackend(repo["root"])
    assert backend._sessions == {}
    batch = feeds(8)
    out = backend.infer("dispatch_router", batch)
    assert set(backend._sessions) == {"dispatch_router"}
    w, b = repo["weights"]["dispatch_router"]
    expected = reference(batch["token_ids"], batch["token_weights"], w, b, 1.7)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-4, atol=1e-6)
    backend.close()


def test_ort_backend_errors(repo):
    backend = OnnxRuntimeBackend(repo["root"])
    with pytest.raises(BackendUnavailable, match="no model 'nope'"):
        backend.infer("nope", feeds(1))
    with pytest.raises(InferenceError, match="takes inputs"):
        backend.infer("event_classifier", {"token_ids": feeds(1)["token_ids"]})
    bad = feeds(2)
    bad["token_ids"][1, 0] = VOCAB + 5  # outside the hashed vocabulary
    with pytest.raises(InferenceError, match="out of data bounds|indices"):
        backend.infer("event_classifier", bad)
    with pytest.raises(InferenceError, match="batch dimension"):
        backend.infer(
            "event_classifier",
            {
                "token_ids": np.zeros((2, 1024), np.int64),
                "token_weights": np.zeros((3, 1024), np.float32),
            },
        )


def test_ort_backend_is_safe_across_threads(repo):
    backend = OnnxRuntimeBackend(repo["root"])
    batch = feeds(16, seed=11)
    expected = backend.infer("event_classifier", batch)["probabilities"]

    def worker(rows: slice) -> int:
        for _ in range(5):
            part = {k: v[rows] for k, v in batch.items()}
            out = backend.infer("event_classifier", part)["probabilities"]
            np.testing.assert_allclose(out, expected[rows], rtol=1e-5, atol=1e-6)
        return 5

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(worker, [slice(i, i + 4) for i in (0, 4, 8, 12)]))
    assert done == [5, 5, 5, 5]


def test_ort_check_model(repo):
    backend = OnnxRuntimeBackend(repo["root"])
    right = info_of(repo, "event_classifier")
    backend.check_model(right)
    with pytest.raises(ModelMismatch, match=r"version is 'v1' \(expected 'v2'\)"):
        backend.check_model(dataclasses.replace(right, version="v2"))
    with pytest.raises(ModelMismatch, match="no file"):
        backend.check_model(dataclasses.replace(right, name="missing_model"))


# ---------------------------------------------------------------------- model comparison


def expected_info() -> ModelInfo:
    return ModelInfo(
        name="m",
        version="7",
        labels=("a", "b", "c"),
        sequence_length=16,
        inputs=(
            TensorSpec("token_ids", "INT64", (16,)),
            TensorSpec("token_weights", "FP32", (16,)),
        ),
        outputs=(TensorSpec("probabilities", "FP32", (3,)),),
    )


def test_model_differences_names_every_difference():
    want = expected_info()
    same = ServedModel("m", "7", want.inputs, want.outputs, max_batch_size=64)
    assert model_differences(want, same, 64) == []
    served = ServedModel(
        "m",
        "8",
        (TensorSpec("token_ids", "INT32", (16,)), TensorSpec("token_weights", "FP32", (32,))),
        (TensorSpec("probs", "FP32", (3,)),),
        max_batch_size=8,
        labels=("a", "b"),
    )
    problems = model_differences(want, served, 64)
    assert problems == [
        "version is '8' (expected '7')",
        "input 'token_ids' has dtype INT32 (expected INT64)",
        "input 'token_weights' has dims [32] (expected [16])",
        "output 'probabilities' is missing",
        "unexpected output 'probs'",
        "max_batch_size is 8, below the 64 we send",
        "labels differ (2 served, 3 expected)",
    ]


def test_served_model_from_grpc_and_http_config_json():
    grpc_form = {
        "name": "m",
        "max_batch_size": 64,
        "input": [
            {"name": "token_ids", "data_type": "TYPE_INT64", "dims": ["16"]},
            {"name": "token_weights", "data_type": "TYPE_FP32", "dims": ["16"]},
        ],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["3"]}],
        "parameters": {"citystream_model_version": {"string_value": "7"}},
    }
    http_form = {
        **grpc_form,
        "input": [{**t, "dims": [16]} for t in grpc_form["input"]],
        "output": [{**t, "dims": [3]} for t in grpc_form["output"]],
    }
    for config in (grpc_form, http_form):
        served = served_model_from_config(config)
        assert model_differences(expected_info(), served, 64) == []
    no_version = served_model_from_config({**grpc_form, "parameters": {}})
    assert model_differences(expected_info(), no_version, 64) == ["version is None (expected '7')"]


def test_triton_backend_rejects_bad_arguments():
    with pytest.raises(ValueError, match="protocol"):
        TritonBackend("127.0.0.1:1", protocol="udp")
    with pytest.raises(ValueError, match="retries"):
        TritonBackend("127.0.0.1:1", retries=-1)
    backend = TritonBackend("127.0.0.1:1", max_batch_size=4)
    with pytest.raises(InferenceError, match="batch of 5 rows"):
        backend.infer("m", {"token_ids": np.zeros((5, 3), np.int64)})


# ------------------------------------------------------------------------------ fallback


class DownPrimary:
    """Stands in for Triton: down until ``up`` is set; counts the calls that reached it."""

    name = "triton-grpc"

    def __init__(self, answer_from: OnnxRuntimeBackend) -> None:
        self.up = False
        self.calls = 0
        self.reject = False
        self._answer_from = answer_from

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.reject:
            raise InferenceError("bad request")
        if not self.up:
            raise BackendUnavailable("connection refused")
        return self._answer_from.infer(model, inputs)

    def check_model(self, expected: ModelInfo) -> None:
        if not self.up:
            raise BackendUnavailable("connection refused")

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fallback_switches_counts_logs_once_and_returns(repo, caplog):
    ort_backend = OnnxRuntimeBackend(repo["root"])
    primary = DownPrimary(OnnxRuntimeBackend(repo["root"]))
    clock = Clock()
    hooked: list[int] = []
    backend = FallbackBackend(
        primary,
        ort_backend,
        retry_primary_after_s=10,
        on_fallback=lambda: hooked.append(1),
        clock=clock,
    )
    batch = feeds(4)
    expected = ort_backend.infer("event_classifier", batch)["probabilities"]

    with caplog.at_level(logging.INFO, logger="models.inference"):
        answers = [backend.infer_with_source("event_classifier", batch) for _ in range(5)]
    assert [a.backend for a in answers] == ["onnxruntime"] * 5
    assert all(a.fallback for a in answers)
    for answer in answers:
        np.testing.assert_allclose(answer.outputs["probabilities"], expected, rtol=1e-6)
    # Only the first request tried the primary; the rest went straight to the fallback.
    assert primary.calls == 1
    assert backend.fallback_count == 5 and len(hooked) == 5 and backend.primary_down
    switch_lines = [r for r in caplog.records if "switching" in r.getMessage()]
    assert len(switch_lines) == 1 and "unavailable" in switch_lines[0].getMessage()

    # After the retry interval one request probes the primary (still down): fallback again.
    clock.now += 10
    assert backend.infer_with_source("event_classifier", batch).backend == "onnxruntime"
    assert primary.calls == 2
    clock.now += 5
    backend.infer("event_classifier", batch)
    assert primary.calls == 2  # not yet time for another probe

    # Primary back: the next probe succeeds and later requests stay on it.
    primary.up = True
    clock.now += 10
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models.inference"):
        answers = [backend.infer_with_source("event_classifier", batch) for _ in range(3)]
    assert [a.backend for a in answers] == ["triton-grpc"] * 3
    assert not any(a.fallback for a in answers)
    assert primary.calls == 5 and not backend.primary_down
    assert backend.fallback_count == 7
    back_lines = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(back_lines) == 1


def test_fallback_does_not_hide_bad_requests(repo):
    primary = DownPrimary(OnnxRuntimeBackend(repo["root"]))
    primary.reject = True
    backend = FallbackBackend(primary, OnnxRuntimeBackend(repo["root"]))
    with pytest.raises(InferenceError, match="bad request"):
        backend.infer("event_classifier", feeds(1))
    assert backend.fallback_count == 0


def test_fallback_raises_when_both_are_down(repo):
    primary = DownPrimary(OnnxRuntimeBackend(repo["root"]))
    backend = FallbackBackend(primary, OnnxRuntimeBackend(repo["root"]))
    with pytest.raises(BackendUnavailable, match="no model"):
        backend.infer("not_deployed", feeds(1))


def test_fallback_check_model(repo):
    primary = DownPrimary(OnnxRuntimeBackend(repo["root"]))
    backend = FallbackBackend(primary, OnnxRuntimeBackend(repo["root"]))
    right = info_of(repo, "dispatch_router")
    backend.check_model(right)  # primary down: start on the fallback
    assert backend.primary_down
    with pytest.raises(ModelMismatch, match="version"):
        backend.check_model(dataclasses.replace(right, version="other"))


def test_fallback_counts_are_exact_under_threads(repo):
    primary = DownPrimary(OnnxRuntimeBackend(repo["root"]))
    backend = FallbackBackend(primary, OnnxRuntimeBackend(repo["root"]), retry_primary_after_s=60)
    batch = feeds(2)

    def worker(_: int) -> int:
        return sum(backend.infer_with_source("dispatch_router", batch).fallback for _ in range(10))

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(worker, range(4))) == 40
    assert backend.fallback_count == 40
    assert primary.calls <= 4  # at most the requests in flight when it first failed


# ------------------------------------------------------------- per-model metrics hooks


def _policy() -> object:
    from processors.dispatch import DispatchPolicy

    return DispatchPolicy(
        code_labels=tuple(f"A{i:02d}" for i in range(45)),
        route_labels=tuple(f"R{i}" for i in range(20)),
        router_weight=0.5, calibration_x=(), calibration_y=(), auto_threshold=0.9,
        target_accuracy=0.98, model_versions={"event_classifier": "c7", "dispatch_router": "r3"},
    )


def test_scorer_reports_each_model_call_with_version_and_backend(repo):
    from models.scoring import BackendScorer
    from processors.dispatch import ModelsUnavailable

    calls: list[tuple[str, str, str, bool]] = []
    observe = lambda m, v, b, s, failed: calls.append((m, v, b, failed))  # noqa: E731
    scorer = BackendScorer(OnnxRuntimeBackend(repo["root"]), _policy(), observe)
    scorer.score(feeds(4))
    assert sorted(calls) == [("dispatch_router", "r3", "onnxruntime", False),
                             ("event_classifier", "c7", "onnxruntime", False)]

    calls.clear()
    down = BackendScorer(DownPrimary(OnnxRuntimeBackend(repo["root"])), _policy(), observe)
    with pytest.raises(ModelsUnavailable):
        down.score(feeds(4))
    assert ("event_classifier", "c7", "triton-grpc", True) in calls


def test_triton_retries_are_counted():
    retried: list[str] = []
    backend = TritonBackend("127.0.0.1:1", retries=2, timeout_s=0.5, backoff_s=0.0,
                            on_retry=retried.append)
    with pytest.raises(BackendUnavailable, match="3 attempts"):
        backend.infer("dispatch_router", feeds(2))
    # The first request (the model's config) fails first, after its own retries.
    assert retried == ["config of 'dispatch_router'"] * 2
