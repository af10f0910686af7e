"""The case embedder as the live stream serves it: ``case_embedder`` from the model
repository ``make train`` writes, through Triton when the settings name one (the
in-process copy of the same file answering while Triton is down or slow) or in-process
with ONNX Runtime alone.

Everything about serving is the dispatch models' (``models.scoring``): the backends
(``build_backend``), the start-up check (the model is ready and its name, version, inputs,
outputs, dtypes and dims are those of the file; a mismatch raises ``ModelMismatch``), the
fallback policy, and the per-call observation (``call_model``: latency and errors per
model and version, ``ModelsUnavailable`` when no backend answers). The model's inputs are
the dispatch models' own (``token_ids`` INT64 [n, 1024], ``token_weights`` FP32 [n, 1024],
from ``models.features``), its output ``embedding`` FP32 [n, 64], on Triton and
in-process alike.

    embedder = build_case_embedder(settings, observe=metrics.observe_model,
                                   on_fallback=metrics.fallbacks.inc)
    vectors = embedder.embed(texts)      # float32 [n, 64], unit rows (zero for no n-grams)
    row = embedding_row(decision, vectors[0], embedder.version)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.embedding.encode import DEFAULT_BATCH, BackendEmbedder, Embedder
from models.embedding.export import META_VERSION, MODEL_NAME, OUTPUT_EMBEDDING, model_meta
from models.inference import InferenceBackend, ModelMismatch
from models.scoring import ModelCallObserver, build_backend, call_model, model_file
from processors.dispatch import ModelsUnavailable
from streams.settings import Settings

EMBEDDING_DIMS = 64  # what case_embeddings rows hold and processors.similar searches

__all__ = [
    "EMBEDDING_DIMS",
    "MODEL_NAME",
    "CaseEmbedder",
    "Embedder",
    "build_case_embedder",
    "embedder_file",
    "embedder_version",
]


def embedder_file(repository: Path) -> Path:
    """Where the repository keeps the embedder (the file Triton and onnxruntime both run)."""
    return model_file(Path(repository), MODEL_NAME)


def embedder_version(repository: Path) -> str:
    """The version of the embedder in ``repository`` (a hash of its weights and tokenizer),
    read from the file's metadata without loading its weights; what rows record as
    ``model_version``. Raises ``ModelMismatch`` when the repository has no embedder."""
    path = embedder_file(repository)
    if not path.is_file():
        raise ModelMismatch(f"model {MODEL_NAME!r} is missing at {path}; run `make train`")
    meta = model_meta(path)
    if META_VERSION not in meta:
        raise ModelMismatch(f"{path} carries no {META_VERSION}: not a citystream model")
    return meta[META_VERSION]


class CaseEmbedder(BackendEmbedder):
    """``Embedder`` over an inference backend, with the dispatch models' serving policy.

    Construction is the start-up check: the backend must serve exactly the file at
    ``path`` (``ModelMismatch`` otherwise; a Triton that is down is noted by the fallback
    pair and the in-process copy used), and the file must embed in ``EMBEDDING_DIMS``.
    ``embed`` raises ``ModelsUnavailable`` when no backend answers; ``last_backend`` names
    the backend that answered the last call (triton-grpc, onnxruntime, ...).
    """

    def __init__(
        self,
        backend: InferenceBackend,
        path: Path,
        *,
        observe: ModelCallObserver | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        super().__init__(backend, path, batch_size)
        if self.name != MODEL_NAME or self.dims != EMBEDDING_DIMS:
            raise ModelMismatch(
                f"{path} is {self.name!r} with {self.dims} dimensions; case_embeddings rows "
                f"hold {MODEL_NAME!r} with {EMBEDDING_DIMS}: run `make train`"
            )
        self.observe = observe
        self.last_backend = ""

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        expected = (len(inputs["token_ids"]), self.dims)

        def check(outputs: dict[str, np.ndarray]) -> None:
            shape = np.shape(outputs.get(OUTPUT_EMBEDDING))  # () when the output is missing
            if shape != expected:
                raise ModelsUnavailable(f"{self.name} answered shape {shape}, expected {expected}")

        outputs, self.last_backend = call_model(
            self._backend, self.name, inputs, version=self.version, observe=self.observe,
            check=check,
        )
        return np.asarray(outputs[OUTPUT_EMBEDDING], dtype=np.float32)

    def close(self) -> None:
        self._backend.close()


def build_case_embedder(
    settings: Settings,
    observe: ModelCallObserver | None = None,
    on_fallback: Callable[[], None] | None = None,
    *,
    triton_url: str | None = None,
    on_retry: Callable[[str], None] | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> CaseEmbedder:
    """The embedder on the backend the settings name (``build_backend``: Triton over
    ``settings.triton_protocol``, gRPC by default, at ``triton_url or
    settings.triton_url`` with the in-process fallback; in-process alone when neither is
    set), after the start-up check. ``observe``, ``on_fallback`` and ``on_retry`` take the
    same metrics hooks as ``models.scoring.build_scorer``."""
    path = embedder_file(settings.model_repository)
    if not path.is_file():
        raise ModelMismatch(f"model {MODEL_NAME!r} is missing at {path}; run `make train`")
    backend = build_backend(settings, on_fallback, triton_url, on_retry)
    try:
        return CaseEmbedder(backend, path, observe=observe, batch_size=batch_size)
    except Exception:
        backend.close()  # a refused start leaves no client threads behind
        raise
