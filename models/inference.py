"""Inference backends behind one interface: in-process onnxruntime, Triton (gRPC or HTTP),
and a fallback pair (Triton first, onnxruntime when Triton is down).

Errors say what the caller can do about them:

* ``BackendUnavailable``: this backend cannot answer now (server down, timeout, model not
  loaded); another backend may. ``FallbackBackend`` switches on it.
* ``InferenceError``: the request itself was rejected (wrong inputs); no backend would
  answer it, so it is never retried or sent to the fallback.
* ``ModelMismatch``: the start-up check found a model other than the one we expect.

Thread safety: ``infer`` may be called from several worker threads at once. onnxruntime
sessions are shared (``InferenceSession.run`` is thread-safe); Triton clients are one per
thread (tritonclient's HTTP client is not thread-safe, and a per-thread gRPC client lets a
thread drop a broken channel without disturbing the others). ``close`` must be called after
the worker threads are done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    RuntimeException,
)

from models.export import ModelInfo, TensorSpec, read_model_info
from models.repository import TRITON_VERSION_DIR, VERSION_PARAMETER

log = logging.getLogger(__name__)

_ORT_RUN_ERRORS = (Fail, InvalidArgument, RuntimeException)
_ORT_LOAD_ERRORS = (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    RuntimeException,
)

T = TypeVar("T")


class BackendUnavailable(RuntimeError):
    """The backend cannot answer now; another backend may."""


class ModelMismatch(RuntimeError):
    """The served model is not the one the caller expects."""


class InferenceError(RuntimeError):
    """The request was rejected as invalid; retrying or another backend would not help."""


class InferenceBackend(Protocol):
    name: str

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def check_model(self, expected: ModelInfo) -> None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------ model checking


@dataclass(frozen=True)
class ServedModel:
    """What a backend reports about a model; None where the backend cannot tell."""

    name: str
    version: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int | None = None
    labels: tuple[str, ...] | None = None


def _tensor_differences(
    kind: str, expected: Sequence[TensorSpec], served: Sequence[TensorSpec]
) -> list[str]:
    want = {t.name: t for t in expected}
    have = {t.name: t for t in served}
    problems = [f"{kind} {name!r} is missing" for name in want if name not in have]
    problems += [f"unexpected {kind} {name!r}" for name in have if name not in want]
    for name in (n for n in want if n in have):  # in expected order: stable messages
        w, h = want[name], have[name]
        if w.dtype != h.dtype:
            problems.append(f"{kind} {name!r} has dtype {h.dtype} (expected {w.dtype})")
        if w.dims != h.dims:
            problems.append(f"{kind} {name!r} has dims {list(h.dims)} (expected {list(w.dims)})")
    return problems


def model_differences(expected: ModelInfo, served: ServedModel, batch_size: int) -> list[str]:
    """Everything in which ``served`` differs from ``expected``; empty when they match."""
    problems = []
    if served.name != expected.name:
        problems.append(f"name is {served.name!r} (expected {expected.name!r})")
    if served.version != expected.version:
        problems.append(f"version is {served.version!r} (expected {expected.version!r})")
    problems += _tensor_differences("input", expected.inputs, served.inputs)
    problems += _tensor_differences("output", expected.outputs, served.outputs)
    if served.max_batch_size is not None and served.max_batch_size < batch_size:
        problems.append(
            f"max_batch_size is {served.max_batch_size}, below the {batch_size} we send"
        )
    if served.labels is not None and served.labels != expected.labels:
        problems.append(
            f"labels differ ({len(served.labels)} served, {len(expected.labels)} expected)"
        )
    return problems


def _raise_if_different(where: str, expected: ModelInfo, served: ServedModel, batch: int) -> None:
    problems = model_differences(expected, served, batch)
    if problems:
        raise ModelMismatch(
            f"model {expected.name!r} on {where} is not the expected one: " + "; ".join(problems)
        )


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in a request (the first dimension, equal across inputs)."""
    if not inputs:
        raise InferenceError("no inputs given")
    rows = {name: (a.shape[0] if a.ndim else -1) for name, a in inputs.items()}
    if len(set(rows.values())) != 1 or -1 in rows.values():
        raise InferenceError(f"inputs must share a batch dimension, got rows {rows}")
    return next(iter(rows.values()))


# --------------------------------------------------------------------------- onnxruntime


class OnnxRuntimeBackend:
    """In-process onnxruntime over a model repository (``<repo>/<name>/1/model.onnx``).

    One session per model, created on first use and shared by all threads.
    """

    name = "onnxruntime"

    def __init__(
        self,
        repository: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 1,
    ) -> None:
        self.repository = Path(repository)
        self.providers = tuple(providers)
        # One thread by default: the worker runs other agents on the same cores; 0 lets
        # onnxruntime take every core.
        self.intra_op_threads = intra_op_threads
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def model_path(self, model: str) -> Path:
        return self.repository / model / TRITON_VERSION_DIR / "model.onnx"

    def _session(self, model: str) -> ort.InferenceSession:
        session = self._sessions.get(model)
        if session is not None:
            return session
        with self._lock:
            session = self._sessions.get(model)
            if session is not None:
                return session
            path = self.model_path(model)
            if not path.is_file():
                raise BackendUnavailable(f"onnxruntime: no model {model!r}: {path} does not exist")
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.intra_op_threads
            options.inter_op_num_threads = 1
            try:
                session = ort.InferenceSession(str(path), options, providers=list(self.providers))
            except _ORT_LOAD_ERRORS as exc:
                raise BackendUnavailable(f"onnxruntime: cannot load {path}: {exc}") from exc
            self._sessions[model] = session
            return session

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(model)
        batch_rows(inputs)
        wanted = sorted(i.name for i in session.get_inputs())
        if sorted(inputs) != wanted:
            raise InferenceError(
                f"onnxruntime: {model} takes inputs {wanted}, got {sorted(inputs)}"
            )
        names = [o.name for o in session.get_outputs()]
        try:
            outputs = session.run(names, dict(inputs))
        except _ORT_RUN_ERRORS as exc:
            raise InferenceError(f"onnxruntime: {model}: {exc}") from exc
        return dict(zip(names, outputs, strict=True))

    def check_model(self, expected: ModelInfo) -> None:
        path = self.model_path(expected.name)
        if not path.is_file():
            raise ModelMismatch(f"model {expected.name!r}: no file {path} for onnxruntime")
        info = read_model_info(path)
        served = ServedModel(
            name=info.name,
            version=info.version,
            inputs=info.inputs,
            outputs=info.outputs,
            labels=info.labels,
        )
        # In-process there is no server-side batch limit to check.
        _raise_if_different(f"onnxruntime ({path})", expected, served, 0)
        self._session(expected.name)  # a file that does not load fails here, at start-up

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()


# ---------------------------------------------------------------------------------- Triton


def _spec_from_config(tensor: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=str(tensor["name"]),
        dtype=str(tensor["data_type"]).removeprefix("TYPE_"),
        # gRPC's JSON form prints int64 dims as strings.
        dims=tuple(int(d) for d in tensor.get("dims", [])),
    )


def served_model_from_config(config: Mapping[str, Any]) -> ServedModel:
    """ServedModel from a Triton model config as JSON (either client's form)."""
    parameters = config.get("parameters", {}) or {}
    version = parameters.get(VERSION_PARAMETER, {}).get("string_value")
    return ServedModel(
        name=str(config["name"]),
        version=version,
        inputs=tuple(_spec_from_config(t) for t in config.get("input", [])),
        outputs=tuple(_spec_from_config(t) for t in config.get("output", [])),
        max_batch_size=int(config.get("max_batch_size", 0)),
    )


class TritonBackend:
    """Triton over gRPC or HTTP (tritonclient), with bounded retries on transient errors."""

    def __init__(
        self,
        url: str,
        protocol: str = "grpc",
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        max_batch_size: int = 64,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        if protocol == "grpc":
            import tritonclient.grpc as client_module
        elif protocol == "http":
            import tritonclient.http as client_module  # type: ignore[no-redef]
        else:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        if retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need retries >= 0, timeout_s > 0, backoff_s >= 0")
        self._module: Any = client_module
        self.url = url
        self.protocol = protocol
        self.name = f"triton-{protocol}"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_batch_size = max_batch_size
        # Told what is being retried ("infer dispatch_router", ...): the retry counter.
        self.on_retry = on_retry
        self._local = threading.local()
        self._clients: set[Any] = set()
        self._outputs: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._transport_errors = self._transport_error_types()

    def _transport_error_types(self) -> tuple[type[BaseException], ...]:
        if self.protocol == "http":
            import gevent

            # geventhttpclient raises socket errors, and gevent.Timeout (a BaseException).
            return (OSError, gevent.Timeout)
        return (OSError,)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.url)
            else:
                client = self._module.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            self._local.client = client
            with self._lock:
                self._clients.add(client)
        return client

    def _drop_client(self) -> None:
        # A gRPC channel that failed backs off its reconnects (up to minutes); a new client
        # connects at once when the server is back.
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def _is_request_error(self, exc: Exception) -> bool:
        status = str(exc.status() if hasattr(exc, "status") else "")
        return status in ("StatusCode.INVALID_ARGUMENT", "400")

    def _call(self, what: str, call: Callable[[Any], T]) -> T:
        from tritonclient.utils import InferenceServerException

        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                if self.on_retry is not None:
                    self.on_retry(what)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return call(self._client())
            except InferenceServerException as exc:
                if self._is_request_error(exc):
                    raise InferenceError(f"{self.name} {what}: {exc.message()}") from exc
                failure = f"{exc.status()}: {exc.message()}"
                self._drop_client()
            except self._transport_errors as exc:
                failure = f"{type(exc).__name__}: {exc}"
                self._drop_client()
        raise BackendUnavailable(
            f"{self.name} at {self.url}: {what} failed after {self.retries + 1} attempts: {failure}"
        )

    def _config(self, client: Any, model: str) -> dict[str, Any]:
        if self.protocol == "grpc":
            return dict(client.get_model_config(model, as_json=True)["config"])
        return dict(client.get_model_config(model))

    def _output_names(self, model: str) -> tuple[str, ...]:
        names = self._outputs.get(model)
        if names is None:
            config = self._call(f"config of {model!r}", lambda c: self._config(c, model))
            names = tuple(str(o["name"]) for o in config.get("output", []))
            self._outputs[model] = names
        return names

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_rows(inputs)
        if rows > self.max_batch_size:
            raise InferenceError(f"{self.name}: batch of {rows} rows > {self.max_batch_size}")
        outputs = self._output_names(model)
        module = self._module
        arrays = {name: np.ascontiguousarray(array) for name, array in inputs.items()}

        def call(client: Any) -> dict[str, np.ndarray]:
            infer_inputs = []
            for name, array in arrays.items():
                tensor = module.InferInput(
                    name, list(array.shape), module.np_to_triton_dtype(array.dtype)
                )
                tensor.set_data_from_numpy(array)
                infer_inputs.append(tensor)
            requested = [module.InferRequestedOutput(name) for name in outputs]
            if self.protocol == "grpc":
                result = client.infer(
                    model, infer_inputs, outputs=requested, client_timeout=self.timeout_s
                )
            else:
                result = client.infer(model, infer_inputs, outputs=requested)
            return {name: result.as_numpy(name) for name in outputs}

        return self._call(f"infer {model!r}", call)

    def _repository_state(self, client: Any, model: str) -> str:
        index = client.get_model_repository_index(
            **({"as_json": True} if self.protocol == "grpc" else {})
        )
        entries = index.get("models", []) if isinstance(index, dict) else index
        for entry in entries:
            if entry.get("name") == model:
                reason = entry.get("reason", "")
                return f"state {entry.get('state', 'unknown')}" + (f": {reason}" if reason else "")
        served = sorted(str(e.get("name")) for e in entries)
        return f"not in the repository (it has {served})"

    def check_model(self, expected: ModelInfo) -> None:
        model = expected.name

        def fetch(client: Any) -> dict[str, Any]:
            if not client.is_model_ready(model):
                raise ModelMismatch(
                    f"model {model!r} is not ready on {self.name} at {self.url}: "
                    f"{self._repository_state(client, model)}"
                )
            return self._config(client, model)

        config = self._call(f"check of {model!r}", fetch)
        served = served_model_from_config(config)
        _raise_if_different(f"{self.name} at {self.url}", expected, served, self.max_batch_size)
        self._outputs[model] = tuple(t.name for t in served.outputs)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, set()
        for client in clients:
            client.close()
        self._local = threading.local()


# -------------------------------------------------------------------------------- fallback


@dataclass(frozen=True)
class Answer:
    outputs: dict[str, np.ndarray]
    backend: str  # name of the backend that answered
    fallback: bool  # True when the primary was skipped or failed


class FallbackBackend:
    """The primary (Triton) first; the fallback (in-process onnxruntime) when it is down.

    The primary's own retries bound the time spent on it. After it fails, requests go
    straight to the fallback, and one request every ``retry_primary_after_s`` probes the
    primary again; a success switches back. Each switch is logged once; every request that
    the fallback answers is counted (``fallback_count``) and calls ``on_fallback()``, which
    takes no arguments so that a Prometheus ``Counter.inc`` can be passed as it is.
    """

    def __init__(
        self,
        primary: InferenceBackend,
        fallback: InferenceBackend,
        *,
        retry_primary_after_s: float = 10.0,
        on_fallback: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = f"{primary.name}|{fallback.name}"
        self.retry_primary_after_s = retry_primary_after_s
        self.on_fallback = on_fallback
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._fallback_count = 0

    @property
    def fallback_count(self) -> int:
        return self._fallback_count

    @property
    def primary_down(self) -> bool:
        return self._down_since is not None

    def _take_primary_turn(self) -> bool:
        with self._lock:
            if self._down_since is None:
                return True
            now = self._clock()
            if now < self._next_probe:
                return False
            # This request probes; the others keep using the fallback meanwhile.
            self._next_probe = now + self.retry_primary_after_s
            return True

    def _primary_failed(self, exc: BackendUnavailable) -> None:
        with self._lock:
            now = self._clock()
            self._next_probe = now + self.retry_primary_after_s
            if self._down_since is not None:
                log.debug("primary %s still unavailable: %s", self.primary.name, exc)
                return
            self._down_since = now
        log.warning(
            "inference: primary %s unavailable, switching to %s (re-trying every %.1f s): %s",
            self.primary.name,
            self.fallback.name,
            self.retry_primary_after_s,
            exc,
        )

    def _primary_ok(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            down_since, self._down_since = self._down_since, None
        if down_since is not None:
            log.warning(
                "inference: primary %s is back after %.1f s, switching back from %s",
                self.primary.name,
                self._clock() - down_since,
                self.fallback.name,
            )

    def infer_with_source(self, model: str, inputs: Mapping[str, np.ndarray]) -> Answer:
        if self._take_primary_turn():
            try:
                outputs = self.primary.infer(model, inputs)
            except BackendUnavailable as exc:
                self._primary_failed(exc)
            else:
                self._primary_ok()
                return Answer(outputs, self.primary.name, fallback=False)
        outputs = self.fallback.infer(model, inputs)
        with self._lock:
            self._fallback_count += 1
        if self.on_fallback is not None:
            self.on_fallback()
        return Answer(outputs, self.fallback.name, fallback=True)

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer_with_source(model, inputs).outputs

    def check_model(self, expected: ModelInfo) -> None:
        """The fallback must hold the model; the primary must too, unless it is down."""
        self.fallback.check_model(expected)
        try:
            self.primary.check_model(expected)
        except BackendUnavailable as exc:
            self._primary_failed(exc)

    def close(self) -> None:
        self.primary.close()
        self.fallback.close()
