"""Both text models behind one call, on whichever backend the settings name.

In-process ONNX Runtime by default; with ``CITYSTREAM_TRITON_URL`` set, Triton first and
the same ONNX files in-process when Triton is down or slow. At start-up the served
models are checked against the policy that training wrote (labels and versions), so a
worker never combines a model with a policy calibrated for another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from models.export import ModelInfo, read_model_info
from models.features import FEATURES_VERSION
from models.inference import (
    BackendUnavailable,
    FallbackBackend,
    InferenceBackend,
    InferenceError,
    OnnxRuntimeBackend,
    TritonBackend,
)
from processors.dispatch import (
    Dispatcher,
    DispatchPolicy,
    ModelOutputs,
    ModelsUnavailable,
    PolicyError,
)
from streams.settings import Settings

CLASSIFIER = "event_classifier"
ROUTER = "dispatch_router"
OUTPUT = "probabilities"


def model_file(repository: Path, name: str) -> Path:
    return repository / name / "1" / "model.onnx"


def expected_models(repository: Path, policy: DispatchPolicy) -> dict[str, ModelInfo]:
    """The model files in the repository, checked against the policy's labels/versions."""
    if policy.features_version != FEATURES_VERSION:
        raise PolicyError(
            f"the models were trained on features {policy.features_version!r}, this code "
            f"computes {FEATURES_VERSION!r}: run `make train`"
        )
    infos: dict[str, ModelInfo] = {}
    for name, labels in ((CLASSIFIER, policy.code_labels), (ROUTER, policy.route_labels)):
        path = model_file(repository, name)
        if not path.is_file():
            raise PolicyError(f"model {name} is missing at {path}; run `make train`")
        info = read_model_info(path)
        if tuple(info.labels) != tuple(labels):
            raise PolicyError(
                f"model {name} at {path} has other labels than the dispatch policy; "
                "the repository and the policy come from different trainings: run `make train`"
            )
        expected_version = policy.model_versions.get(name)
        if expected_version is not None and info.version != expected_version:
            raise PolicyError(
                f"model {name} is version {info.version}, the policy was calibrated for "
                f"{expected_version}: run `make train`"
            )
        infos[name] = info
    return infos


def call_model(
    backend: InferenceBackend,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    version: str = "",
    observe: ModelCallObserver | None = None,
    check: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """One model call under the serving policy every model shares: a ``FallbackBackend``
    answers from Triton or, when Triton is down, in-process (its own retries and
    switching); any failure, or ``check`` refusing the outputs, is ``ModelsUnavailable``;
    every call is told to ``observe`` (model, version, backend, seconds, failed).
    Returns the outputs and the name of the backend that answered."""
    started = time.perf_counter()
    name = getattr(backend, "name", "unknown")
    try:
        try:
            if isinstance(backend, FallbackBackend):
                answer = backend.infer_with_source(model, inputs)
                outputs, name = answer.outputs, answer.backend
            else:
                outputs, name = backend.infer(model, inputs), backend.name
        except (BackendUnavailable, InferenceError) as exc:
            raise ModelsUnavailable(f"{model}: {exc}") from exc
        if check is not None:
            check(outputs)
    except ModelsUnavailable:
        if observe is not None:
            observe(model, version, name, time.perf_counter() - started, True)
        raise
    if observe is not None:
        observe(model, version, name, time.perf_counter() - started, False)
    return outputs, name


class BackendScorer:
    """``processors.dispatch.ModelScorer`` over an inference backend."""

    def __init__(
        self,
        backend: InferenceBackend,
        policy: DispatchPolicy,
        observe: ModelCallObserver | None = None,
    ) -> None:
        self.backend = backend
        self.widths = {CLASSIFIER: len(policy.code_labels), ROUTER: len(policy.route_labels)}
        self.versions = dict(policy.model_versions)
        self.observe = observe
        # The two models are independent: ask for both at once (Triton runs them side by
        # side; onnxruntime releases the GIL while it computes).
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="models")

    def _run(self, model: str, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
        expected = (len(inputs["token_ids"]), self.widths[model])

        def check(outputs: dict[str, np.ndarray]) -> None:
            shape = np.shape(outputs.get(OUTPUT))  # () when the output is missing
            if shape != expected:
                raise ModelsUnavailable(f"{model} answered shape {shape}, expected {expected}")

        outputs, name = call_model(
            self.backend, model, inputs,
            version=self.versions.get(model, ""), observe=self.observe, check=check,
        )
        return np.asarray(outputs[OUTPUT]), name

    def score(self, inputs: dict[str, np.ndarray]) -> ModelOutputs:
        router = self._pool.submit(self._run, ROUTER, inputs)
        code_probs, first = self._run(CLASSIFIER, inputs)
        route_probs, second = router.result()
        backend = first if first == second else f"{first}+{second}"
        return ModelOutputs(code_probs, route_probs, backend)


class ModelCallObserver(Protocol):
    """Told of every model call: model, version, backend, seconds, and whether it failed
    (the per-model latency and error metrics)."""

    def __call__(
        self, model: str, version: str, backend: str, seconds: float, failed: bool
    ) -> None: ...


def build_backend(
    settings: Settings,
    on_fallback: Callable[[], None] | None = None,
    triton_url: str | None = None,
    on_retry: Callable[[str], None] | None = None,
    *,
    max_batch_size: int = 64,
) -> InferenceBackend:
    """``max_batch_size``: the most rows one request carries (the start-up check wants
    the served models to take that many)."""
    local = OnnxRuntimeBackend(settings.model_repository, providers=settings.onnx_providers)
    url = triton_url or settings.triton_url
    if not url:
        return local
    triton = TritonBackend(
        url,
        protocol=settings.triton_protocol,
        timeout_s=settings.triton_timeout_s,
        retries=settings.triton_retries,
        max_batch_size=max_batch_size,
        on_retry=on_retry,
    )
    if not settings.triton_fallback:
        return triton
    return FallbackBackend(
        triton,
        local,
        on_fallback=on_fallback,
    )


def build_scorer(
    settings: Settings,
    policy: DispatchPolicy,
    on_fallback: Callable[[], None] | None = None,
    triton_url: str | None = None,
    *,
    observe: ModelCallObserver | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> BackendScorer:
    """The scorer, after the start-up check: each backend holds the models this policy
    was calibrated for (a Triton that is down is noted and the in-process models used)."""
    infos = expected_models(settings.model_repository, policy)
    backend = build_backend(settings, on_fallback, triton_url, on_retry)
    for info in infos.values():
        backend.check_model(info)
    return BackendScorer(backend, policy, observe)


def build_dispatcher(settings: Settings, triton_url: str | None = None) -> Dispatcher:
    """The dispatcher the batch tools use: same domain, policy, analyser and models as the
    live agent."""
    from processors.address import live_analyser
    from schemas.domain import Domain

    domain = Domain.load(settings.domain_file)
    policy = DispatchPolicy.load(settings.dispatch_policy, domain)
    scorer = build_scorer(settings, policy, triton_url=triton_url)
    return Dispatcher(domain, policy, live_analyser(domain), scorer)
