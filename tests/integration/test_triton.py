"""A real tritonserver (infra.triton) serving models built by models.export, against the
in-process onnxruntime backend. The server-outage test stops and restarts the session's
server, so it runs last in this file."""

from __future__ import annotations

import dataclasses
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from infra.services import free_ports
from infra.triton import TritonServer
from models.export import ModelInfo, expected_specs, read_model_info
from models.inference import (
    BackendUnavailable,
    FallbackBackend,
    InferenceError,
    ModelMismatch,
    OnnxRuntimeBackend,
    TritonBackend,
)
from streams.settings import REPO_ROOT

pytestmark = pytest.mark.integration

MODELS = ("event_classifier", "dispatch_router")
VOCAB = 2**16
L = 1024


def batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (rows, L)).astype(np.int64)
    weights = rng.random((rows, L)).astype(np.float32)
    for n, used in enumerate(rng.integers(1, L, rows)):
        ids[n, used:] = 0
        weights[n, used:] = 0.0
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    return {"token_ids": ids, "token_weights": weights}


def info(repository: Path, model: str) -> ModelInfo:
    return read_model_info(repository / model / "1" / "model.onnx")


@pytest.fixture(scope="module")
def ort_backend(triton_repository: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(triton_repository)


@pytest.fixture(params=["grpc", "http"])
def triton_backend(request, triton: TritonServer):
    url = triton.grpc_url if request.param == "grpc" else triton.http_url
    backend = TritonBackend(url, protocol=request.param, timeout_s=10, retries=1)
    yield backend
    backend.close()


def test_server_uses_the_local_config_with_the_python_backend(triton: TritonServer):
    assert triton.ready
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        for model in MODELS:
            config = client.get_model_config(model, as_json=True)["config"]
            # configs/local.pbtxt, not config.pbtxt (which asks for the onnxruntime backend
            # that this tritonserver build lacks).
            assert config["backend"] == "python"
            assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"
    finally:
        client.close()
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as response:
        assert b"nv_inference_request_success" in response.read()


@pytest.mark.parametrize("rows", [1, 7, 32, 64])
def test_triton_matches_onnxruntime(triton_backend: TritonBackend, ort_backend, rows: int):
    for i, model in enumerate(MODELS):
        inputs = batch(rows, seed=rows * 10 + i)
        served = triton_backend.infer(model, inputs)["probabilities"]
        local = ort_backend.infer(model, inputs)["probabilities"]
        assert served.shape == local.shape == (rows, 45 if i == 0 else 20)
        np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-5)


def test_concurrent_requests_from_threads(triton: TritonServer, ort_backend):
    grpc_backend = TritonBackend(triton.grpc_url, "grpc", timeout_s=20, retries=0)
    http_backend = TritonBackend(triton.http_url, "http", timeout_s=20, retries=0)
    stats_client = grpcclient.InferenceServerClient(triton.grpc_url)

    def rows_executed() -> tuple[int, int]:
        stats = stats_client.get_inference_statistics("event_classifier", as_json=True)
        entry = stats["model_stats"][0]
        return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))

    before_rows, before_runs = rows_executed()
    jobs = [(n, 1 + (n * 13) % 64) for n in range(48)]

    def run(job: tuple[int, int]) -> int:
        n, rows = job
        backend = grpc_backend if n % 2 else http_backend
        inputs = batch(rows, seed=1000 + n)
        served = backend.infer("event_classifier", inputs)["probabilities"]
        local = ort_backend.infer("event_classifier", inputs)["probabilities"]
        np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-5)
        return rows

    try:
        with ThreadPoolExecutor(8) as pool:
            total_rows = sum(pool.map(run, jobs))
        after_rows, after_runs = rows_executed()
    finally:
        grpc_backend.close()
        http_backend.close()
        stats_client.close()
    assert after_rows - before_rows == total_rows
    # Each request runs in at most one execution; the dynamic batcher may merge several.
    assert 1 <= after_runs - before_runs <= len(jobs)
    print(f"\n{len(jobs)} requests, {total_rows} rows in {after_runs - before_runs} executions")


def test_check_model_passes_for_the_right_model(triton_backend, triton_repository):
    for model in MODELS:
        triton_backend.check_model(info(triton_repository, model))


def test_check_model_names_what_differs(triton_backend, triton_repository):
    right = info(triton_repository, "event_classifier")
    with pytest.raises(
        ModelMismatch, match=r"version is 'event_classifier-test-1' \(expected 'v9'\)"
    ):
        triton_backend.check_model(dataclasses.replace(right, version="v9"))
    inputs, outputs = expected_specs(512, 44)
    wrong_dims = dataclasses.replace(right, inputs=inputs, outputs=outputs)
    with pytest.raises(ModelMismatch) as caught:
        triton_backend.check_model(wrong_dims)
    message = str(caught.value)
    assert "input 'token_ids' has dims [1024] (expected [512])" in message
    assert "output 'probabilities' has dims [45] (expected [44])" in message
    with pytest.raises(ModelMismatch, match="not ready.*not in the repository"):
        triton_backend.check_model(dataclasses.replace(right, name="no_such_model"))
    greedy = TritonBackend(triton_backend.url, triton_backend.protocol, max_batch_size=128)
    try:
        with pytest.raises(ModelMismatch, match="max_batch_size is 64, below the 128"):
            greedy.check_model(right)
    finally:
        greedy.close()


def test_bad_request_is_an_inference_error_not_an_outage(triton_backend):
    inputs = batch(3, seed=5)
    inputs["token_ids"][2, 0] = VOCAB + 1
    started = time.monotonic()
    with pytest.raises(InferenceError, match="out of data bounds"):
        triton_backend.infer("event_classifier", inputs)
    assert time.monotonic() - started < 2  # not retried
    # The other requests of the same server batch are unaffected.
    good = batch(2, seed=6)
    assert triton_backend.infer("event_classifier", good)["probabilities"].shape == (2, 45)


def test_server_refuses_a_model_file_whose_version_differs_from_its_config(
    tmp_path: Path, triton_repository: Path
):
    # Runs on its own server: must not disturb the session's one.
    repository = tmp_path / "repository"
    shutil.copytree(triton_repository, repository)
    config = repository / "dispatch_router" / "configs" / "local.pbtxt"
    config.write_text(config.read_text().replace("dispatch_router-test-1", "dispatch_router-old"))
    server = TritonServer(tmp_path / "home", repository, *free_ports(3), REPO_ROOT / ".cache")
    try:
        with pytest.raises(RuntimeError, match="file version 'dispatch_router-test-1' != config"):
            server.start(timeout_s=60)
    finally:
        server.stop()


# ---------------------------------------------- the case embedder that make train writes


def test_make_train_serves_the_case_embedder_next_to_the_dispatch_models(
    trained_models, dispatch_triton: TritonServer
):
    from tritonclient.grpc import model_config_pb2 as mc

    from models.embedding.serving import build_case_embedder, embedder_version
    from models.repository import parse_config
    from models.simulator import generate_history
    from schemas.domain import Domain
    from streams.settings import Settings

    repository = trained_models.repository
    assert sorted(p.name for p in repository.iterdir()) == [
        "case_embedder", "dispatch_router", "event_classifier"
    ]
    model_dir = repository / "case_embedder"
    assert not (model_dir / "labels.txt").exists()  # no labels: an embedding
    specs = [("token_ids", mc.TYPE_INT64, [1024]), ("token_weights", mc.TYPE_FP32, [1024])]
    for name, kind, backend in (
        ("config.pbtxt", mc.ModelInstanceGroup.KIND_CPU, "onnxruntime"),
        ("configs/gpu.pbtxt", mc.ModelInstanceGroup.KIND_GPU, "onnxruntime"),
        ("configs/local.pbtxt", mc.ModelInstanceGroup.KIND_CPU, "python"),
    ):
        config = parse_config((model_dir / name).read_text())
        assert config.backend == backend and config.max_batch_size == 64
        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == specs
        assert [(o.name, o.data_type, list(o.dims), o.label_filename) for o in config.output] == [
            ("embedding", mc.TYPE_FP32, [64], "")
        ]
        assert [g.kind for g in config.instance_group] == [kind]
        assert list(config.dynamic_batching.preferred_batch_size) == [16, 32, 64]

    domain = Domain.load(Settings().domain_file)
    history = generate_history(domain, 70, seed=77, start=date(2025, 1, 1), end=date(2025, 3, 1))
    texts = [r.text for r in history] + ["", "😀", "路灯不亮"]
    calls: list[tuple] = []
    fallbacks: list[int] = []
    served = build_case_embedder(
        Settings(model_repository=repository, triton_url=dispatch_triton.grpc_url),
        observe=lambda *call: calls.append(call),
        on_fallback=lambda: fallbacks.append(1),
    )
    local = build_case_embedder(Settings(model_repository=repository))
    try:
        over_grpc = served.embed(texts)
        in_process = local.embed(texts)
    finally:
        served.close()
        local.close()
    assert over_grpc.dtype == np.float32 and over_grpc.shape == (len(texts), 64)
    assert float(np.abs(over_grpc - in_process).max()) < 1e-5
    norms = np.linalg.norm(over_grpc, axis=1)
    np.testing.assert_allclose(norms[:-3], 1.0, atol=1e-5)
    assert norms[-3] == 0.0  # no n-grams: a zero vector, matching nothing
    assert (served.last_backend, local.last_backend) == ("triton-grpc", "onnxruntime")
    assert served.version == local.version == embedder_version(repository)
    assert not fallbacks
    # One observed call per batch of 32: model, version, backend, seconds, failed.
    assert [(c[0], c[1], c[2], c[4]) for c in calls] == [
        ("case_embedder", served.version, "triton-grpc", False)
    ] * 3


def test_case_embedder_start_up_check_and_fallback(
    trained_models, dispatch_triton: TritonServer, tmp_path: Path
):
    from models.embedding.export import build_ngram_embedder, save_model
    from models.embedding.serving import build_case_embedder
    from models.features import BUCKETS
    from streams.settings import Settings

    # Another embedder in-process than the one Triton serves: refused at start-up.
    other = tmp_path / "repository"
    shutil.copytree(trained_models.repository, other)
    weights = np.random.default_rng(3).normal(0, 1, (BUCKETS, 64)).astype(np.float32)
    save_model(build_ngram_embedder(weights), other / "case_embedder" / "1" / "model.onnx")
    with pytest.raises(ModelMismatch, match=r"case_embedder.*triton-grpc.*version is"):
        build_case_embedder(Settings(model_repository=other, triton_url=dispatch_triton.grpc_url))

    # Triton not there: start-up notes it, every call is answered in-process and counted.
    fallbacks: list[int] = []
    calls: list[tuple] = []
    down = build_case_embedder(
        Settings(model_repository=trained_models.repository,
                 triton_url=f"127.0.0.1:{free_ports(1)[0]}"),
        observe=lambda *call: calls.append(call),
        on_fallback=lambda: fallbacks.append(1),
    )
    try:
        vectors = down.embed(["香港中路路灯不亮", "垃圾没人清理"])
    finally:
        down.close()
    assert vectors.shape == (2, 64) and down.last_backend == "onnxruntime"
    assert fallbacks == [1] and [c[2] for c in calls] == ["onnxruntime"]


def test_outage_falls_back_to_onnxruntime_and_returns(triton: TritonServer, ort_backend):
    fallbacks: list[int] = []
    backend = FallbackBackend(
        TritonBackend(triton.grpc_url, "grpc", timeout_s=2, retries=1, backoff_s=0.05),
        ort_backend,
        retry_primary_after_s=0.5,
        on_fallback=lambda: fallbacks.append(1),
    )
    http_only = TritonBackend(triton.http_url, "http", timeout_s=2, retries=1, backoff_s=0.05)
    inputs = batch(16, seed=77)
    local = ort_backend.infer("dispatch_router", inputs)["probabilities"]
    try:
        first = backend.infer_with_source("dispatch_router", inputs)
        assert (first.backend, first.fallback) == ("triton-grpc", False)
        http_only.infer("dispatch_router", inputs)

        triton.stop()
        assert not triton.ready
        during = backend.infer_with_source("dispatch_router", inputs)
        assert (during.backend, during.fallback) == ("onnxruntime", True)
        np.testing.assert_allclose(during.outputs["probabilities"], local, rtol=1e-5, atol=1e-5)
        assert backend.fallback_count == 1 and fallbacks == [1] and backend.primary_down
        with pytest.raises(BackendUnavailable, match="triton-http"):
            http_only.infer("dispatch_router", inputs)

        restarted = time.monotonic()
        triton.start(timeout_s=60)
        print(f"\ntritonserver restarted in {time.monotonic() - restarted:.1f} s")
        deadline = time.monotonic() + 15
        answer = backend.infer_with_source("dispatch_router", inputs)
        while answer.backend != "triton-grpc" and time.monotonic() < deadline:
            time.sleep(0.1)
            answer = backend.infer_with_source("dispatch_router", inputs)
        assert (answer.backend, answer.fallback) == ("triton-grpc", False)
        assert not backend.primary_down
        np.testing.assert_allclose(answer.outputs["probabilities"], local, rtol=1e-5, atol=1e-5)
        assert backend.infer_with_source("dispatch_router", inputs).backend == "triton-grpc"
        assert http_only.infer("dispatch_router", inputs)["probabilities"].shape == (16, 20)
    finally:
        http_only.close()
        backend.primary.close()
        if not triton.ready:
            triton.start(timeout_s=60)
