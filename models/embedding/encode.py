"""Texts -> case embeddings, through an exported embedder (``models.embedding.export``).

``Embedder`` is what search and the pipeline need; two implementations:

* ``OnnxEmbedder``: the model file in-process with onnxruntime (dev, CI, fallback);
* ``BackendEmbedder``: any ``models.inference.InferenceBackend`` (Triton, onnxruntime over a
  model repository, or the Triton-then-onnxruntime ``FallbackBackend``), as the dispatch
  models are served.

Both tokenise with ``models.embedding.tokenizer`` (chosen by the file's metadata), run in
batches of ``batch_size`` rows, and return float32 [n, D], each row L2-normalised (an
all-padding input, e.g. text with no letters, gives a zero row: it matches nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from models.embedding.export import (
    META_EMBEDDING_DIM,
    META_TOKENIZER,
    OUTPUT_EMBEDDING,
    model_meta,
)
from models.embedding.tokenizer import (
    NGRAM_TOKENIZER,
    USE_TOKENIZER_PREFIX,
    ngram_inputs,
    use_inputs,
    use_tokenizer_fingerprint,
)
from models.export import META_NAME, META_SEQUENCE_LENGTH, META_VERSION, read_model_info
from models.inference import InferenceBackend

Tokenize = Callable[[Sequence[str]], dict[str, np.ndarray]]

DEFAULT_BATCH = 32


class Embedder(Protocol):
    name: str
    version: str
    dims: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def tokenizer_for(tokenizer: str, sequence_length: int) -> Tokenize:
    """The tokenising function a model's ``citystream.tokenizer`` names."""
    if tokenizer == NGRAM_TOKENIZER:
        return ngram_inputs
    if tokenizer.startswith(USE_TOKENIZER_PREFIX):
        installed = USE_TOKENIZER_PREFIX + use_tokenizer_fingerprint()[:16]
        if tokenizer != installed:
            # Another SentencePiece model numbers the pieces differently.
            raise ValueError(f"model was exported with {tokenizer}, the package has {installed}")
        return lambda texts: use_inputs(texts, sequence_length)
    if tokenizer.startswith("hashed-char-ngrams/"):
        # Same family, other features version: the ids would mean other n-grams.
        raise ValueError(f"model was trained on {tokenizer}, this code makes {NGRAM_TOKENIZER}")
    raise ValueError(f"unknown embedder tokenizer {tokenizer!r}")


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (zero rows stay zero); the graphs already normalise, this guards the
    float32 drift of a remote backend and keeps the contract in one place."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def embed_batched(
    texts: Sequence[str],
    tokenize: Tokenize,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    dims: int,
    batch_size: int,
) -> np.ndarray:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(texts, str):
        raise TypeError("embed takes a sequence of texts, not one str")
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for lo in range(0, len(texts), batch_size):
        chunk = list(texts[lo : lo + batch_size])
        vectors = run(tokenize(chunk))
        if vectors.shape != (len(chunk), dims):
            raise ValueError(f"embedder returned {vectors.shape}, expected {(len(chunk), dims)}")
        out[lo : lo + len(chunk)] = vectors
    return normalise_rows(out)


class OnnxEmbedder:
    """An exported embedder file run in-process by onnxruntime."""

    def __init__(
        self, path: Path, batch_size: int = DEFAULT_BATCH, intra_op_threads: int = 1
    ) -> None:
        meta = model_meta(Path(path))
        if META_EMBEDDING_DIM not in meta or META_TOKENIZER not in meta:
            raise ValueError(f"{path}: not a citystream embedder (metadata lacks dim/tokenizer)")
        self.name = meta[META_NAME]
        self.version = meta[META_VERSION]
        self.dims = int(meta[META_EMBEDDING_DIM])
        self.batch_size = batch_size
        self._tokenize = tokenizer_for(meta[META_TOKENIZER], int(meta[META_SEQUENCE_LENGTH]))
        options = ort.SessionOptions()
        # One thread by default, like the dispatch models: the worker shares its cores.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._session.run([OUTPUT_EMBEDDING], inputs)[0])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_batched(texts, self._tokenize, self._run, self.dims, self.batch_size)


class BackendEmbedder:
    """An embedder served by a ``models.inference`` backend (Triton in production).

    ``path`` is the same exported file the backend serves: its metadata gives the
    tokenizer, dims and version, and ``backend.check_model`` compares them at start-up.
    """

    def __init__(
        self, backend: InferenceBackend, path: Path, batch_size: int = DEFAULT_BATCH
    ) -> None:
        info = read_model_info(Path(path))
        meta = model_meta(Path(path))
        self.name = info.name
        self.version = info.version
        self.dims = int(meta[META_EMBEDDING_DIM])
        self.batch_size = batch_size
        self._tokenize = tokenizer_for(meta[META_TOKENIZER], info.sequence_length)
        self._backend = backend
        backend.check_model(info)  # a file other than the served one fails at start-up

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._backend.infer(self.name, inputs)[OUTPUT_EMBEDDING])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_batched(texts, self._tokenize, self._run, self.dims, self.batch_size)
