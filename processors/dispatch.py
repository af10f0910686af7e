"""Dispatch: which unit handles a report, and whether to send it there automatically.

Pure: a request (and the models' probabilities) in, a ``DispatchDecision`` out. No Kafka,
Triton or ClickHouse here; the live agent, ``citystream score``, training-time threshold
selection and the tests all run this code.

Two views of the unit are combined. The router reads the unit's route straight from the
text (it learned from which units really handled past reports). The classifier reads the
event type, and the domain's rule turns each type, at the place's location type, into a
route. A route both views support scores high; the product is then mapped to a
calibrated probability of being right, and the review threshold is chosen on held-out
data for a target accuracy (``models.train``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.features import encode_batch
from processors.address import AddressAnalysis
from processors.dispatch_rule import (
    RuleError,
    UnitResolution,
    read_owner,
    route_for,
    unit_for,
)
from processors.ingest import IngestContext, SourceMessage, StoredRow, ingest
from schemas.domain import Domain
from schemas.records import (
    Alternative,
    DispatchDecision,
    ReviewReason,
)

ALTERNATIVES = 3
# Enough of the report for a dispatcher to judge it on the board.
DECISION_TEXT_CHARS = 1000
# A code an inspector chose at the scene is strong evidence, not a certainty.
CODE_HINT_WEIGHT = 0.8


class PolicyError(ValueError):
    """The dispatch policy file is missing, malformed, or does not fit the domain."""


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    input_id: str
    input_kind: str  # "city_event" | "citizen_appeal"
    text: str
    received_at: datetime
    district: str | None = None
    street: str | None = None
    road: str | None = None
    location_type: str | None = None
    code: str | None = None
    # Hotline, app, WeChat... for appeals; the source (inspector, camera) for events.
    channel: str = ""


class PlaceReader(Protocol):
    """Address analysis (``processors.address``): the live one or any other."""

    def analyse(
        self,
        text: str,
        *,
        district: str | None = ...,
        street: str | None = ...,
        road: str | None = ...,
        location_type: str | None = ...,
    ) -> AddressAnalysis: ...


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    request: DispatchRequest
    address: AddressAnalysis
    owner: str


def prepare(request: DispatchRequest, analyser: PlaceReader, domain: Domain) -> PreparedRequest:
    address = analyser.analyse(
        request.text,
        district=request.district,
        street=request.street,
        road=request.road,
        location_type=request.location_type,
    )
    return PreparedRequest(request, address, read_owner(domain, request.text))


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """What training decided: label layouts, how the two views combine, the calibration
    map from combined score to probability of the right unit, and the auto threshold."""

    code_labels: tuple[str, ...]
    route_labels: tuple[str, ...]
    router_weight: float
    calibration_x: tuple[float, ...]
    calibration_y: tuple[float, ...]
    auto_threshold: float
    target_accuracy: float
    model_versions: dict[str, str] = field(default_factory=dict)
    features_version: str = ""

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for several scores at once (one interpolation call per
        decision rather than one per alternative)."""
        if not self.calibration_x:
            return np.asarray(scores, dtype=np.float64)
        return np.interp(scores, self.calibration_x, self.calibration_y)

    def to_json(self) -> dict[str, object]:
        return {
            "code_labels": list(self.code_labels),
            "route_labels": list(self.route_labels),
            "router_weight": self.router_weight,
            "calibration": {"x": list(self.calibration_x), "y": list(self.calibration_y)},
            "auto_threshold": self.auto_threshold,
            "target_accuracy": self.target_accuracy,
            "model_versions": dict(self.model_versions),
            "features_version": self.features_version,
        }

    @classmethod
    def from_json(cls, data: dict[str, object], domain: Domain) -> DispatchPolicy:
        try:
            calibration = data["calibration"]
            policy = cls(
                code_labels=tuple(data["code_labels"]),  # type: ignore[arg-type]
                route_labels=tuple(data["route_labels"]),  # type: ignore[arg-type]
                router_weight=float(data["router_weight"]),  # type: ignore[arg-type]
                calibration_x=tuple(float(v) for v in calibration["x"]),  # type: ignore[index]
                calibration_y=tuple(float(v) for v in calibration["y"]),  # type: ignore[index]
                auto_threshold=float(data["auto_threshold"]),  # type: ignore[arg-type]
                target_accuracy=float(data["target_accuracy"]),  # type: ignore[arg-type]
                model_versions=dict(data.get("model_versions", {})),  # type: ignore[call-overload]
                features_version=str(data.get("features_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"dispatch policy is not in the expected shape: {exc!r}") from exc
        unknown_codes = set(policy.code_labels) - set(domain.event_types)
        if unknown_codes:
            raise PolicyError(
                f"the models know codes the domain does not: {sorted(unknown_codes)}; "
                "retrain with `make train` after changing the domain file"
            )
        return policy

    @classmethod
    def load(cls, path: Path, domain: Domain) -> DispatchPolicy:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PolicyError(
                f"cannot read the dispatch policy {path} ({exc.strerror}); run `make train`"
            ) from exc
        except json.JSONDecodeError as exc:
            raise PolicyError(f"dispatch policy {path} is not valid JSON: {exc}") from exc
        return cls.from_json(data, domain)


class RouteTable:
    """For a (location type, owner), which route the rule gives each code: a 0/1 matrix
    [codes × routes], so the classifier's view of the route is one matrix product."""

    def __init__(self, domain: Domain, code_labels: tuple[str, ...], routes: tuple[str, ...]):
        self._domain = domain
        self._codes = code_labels
        self._route_index = {r: i for i, r in enumerate(routes)}
        self.matrix = lru_cache(maxsize=256)(self._matrix)

    def _matrix(self, location_type: str | None, owner: str) -> np.ndarray:
        table = np.zeros((len(self._codes), len(self._route_index)), dtype=np.float64)
        for row, code in enumerate(self._codes):
            route = route_for(self._domain, code, location_type, owner)
            column = self._route_index.get(route)
            if column is None:
                raise PolicyError(f"the rule gives route {route!r}, unknown to the router")
            table[row, column] = 1.0
        return table


@dataclass(frozen=True, slots=True)
class RouteScores:
    """Combined scores over routes and the classifier's code probabilities used."""

    combined: np.ndarray
    code_probs: np.ndarray
    rule_matrix: np.ndarray


def route_scores(
    prepared: PreparedRequest,
    code_probs: np.ndarray,
    route_probs: np.ndarray,
    policy: DispatchPolicy,
    table: RouteTable,
) -> RouteScores:
    code_probs = np.asarray(code_probs, dtype=np.float64)
    hint = prepared.request.code
    if hint is not None and hint in policy.code_labels:
        onehot = np.zeros_like(code_probs)
        onehot[policy.code_labels.index(hint)] = 1.0
        code_probs = CODE_HINT_WEIGHT * onehot + (1 - CODE_HINT_WEIGHT) * code_probs
    matrix = table.matrix(prepared.address.location_type, prepared.owner)
    by_rule = code_probs @ matrix
    a = policy.router_weight
    eps = 1e-9
    by_router = np.asarray(route_probs, dtype=np.float64)
    combined = np.exp(a * np.log(by_router + eps) + (1 - a) * np.log(by_rule + eps))
    combined /= combined.sum()
    return RouteScores(combined, code_probs, matrix)


def _best_code(scores: RouteScores, route_index: int, labels: tuple[str, ...]) -> str:
    # The most likely code among those the rule sends to this route here; the overall
    # most likely code if none does (the router then overrules the classifier).
    consistent = scores.code_probs * scores.rule_matrix[:, route_index]
    chosen = consistent if consistent.max() > 0 else scores.code_probs
    return labels[int(np.argmax(chosen))]


def _resolve(domain: Domain, route: str, address: AddressAnalysis) -> UnitResolution:
    try:
        return unit_for(domain, route, address.district, address.street)
    except RuleError:
        # A street the analyser returned that the rule does not know: not settled.
        return UnitResolution(route, None, "street")


def decide(
    prepared: PreparedRequest,
    code_probs: np.ndarray,
    route_probs: np.ndarray,
    policy: DispatchPolicy,
    table: RouteTable,
    domain: Domain,
    *,
    backend: str,
    decided_at: datetime,
    latency_ms: dict[str, float] | None = None,
) -> DispatchDecision:
    scores = route_scores(prepared, code_probs, route_probs, policy, table)
    order = np.argsort(-scores.combined, kind="stable")
    best = int(order[0])
    route = policy.route_labels[best]
    code = _best_code(scores, best, policy.code_labels)
    address = prepared.address
    resolution = _resolve(domain, route, address)
    ranked = order[: 1 + ALTERNATIVES]
    calibrated = policy.calibrated(scores.combined[ranked])
    confidence = float(calibrated[0])

    reasons: list[ReviewReason] = []
    if address.outside_city:
        reasons.append("outside_city")
    if resolution.missing == "district":
        reasons.append("district_unknown")
    elif resolution.missing == "street":
        reasons.append("street_unknown")
    if any("conflict" in item for item in address.unresolved):
        reasons.append("place_conflict")
    if confidence < policy.auto_threshold:
        reasons.append("low_confidence")

    alternatives = []
    for rank, index in enumerate(ranked[1:], start=1):
        alt_route = policy.route_labels[int(index)]
        alt_unit = _resolve(domain, alt_route, address).unit
        alternatives.append(
            Alternative(
                unit=alt_unit or alt_route,
                route=alt_route,
                code=_best_code(scores, int(index), policy.code_labels),
                confidence=round(float(calibrated[rank]), 4),
            )
        )
    event_type = domain.event_types[code]
    return _decision(
        prepared,
        respond_minutes=domain.urgency_minutes[event_type.urgency],
        code=code,
        event_name=event_type.name,
        urgency=event_type.urgency,
        route=route,
        unit=resolution.unit,
        confidence=round(min(max(confidence, 0.0), 1.0), 4),
        auto=not reasons,
        review_reasons=tuple(reasons),
        alternatives=tuple(alternatives),
        model_versions=dict(policy.model_versions),
        backend=backend,
        latency_ms=dict(latency_ms or {}),
        decided_at=decided_at,
    )


def _decision(
    prepared: PreparedRequest, *, decided_at: datetime, respond_minutes: int, **fields: Any
) -> DispatchDecision:
    """A decision carrying the request's identity, its text for the dispatcher, what
    address analysis found, and when the unit must have it (the urgency's response time)."""
    address = prepared.address
    request = prepared.request
    respond_by = request.received_at + timedelta(minutes=respond_minutes)
    return DispatchDecision(
        kind="dispatch_decision",
        schema_version=1,
        input_id=request.input_id,
        input_kind=request.input_kind,  # type: ignore[arg-type]
        channel=request.channel or None,
        text=request.text[:DECISION_TEXT_CHARS],
        district=address.district,
        street=address.street,
        road=address.road,
        place=address.place,
        location_type=address.location_type,
        unresolved=address.unresolved,
        # The wire type takes ISO strings only (see schemas.records.Timestamp).
        received_at=request.received_at.isoformat(),  # type: ignore[arg-type]
        respond_by=respond_by.isoformat(),  # type: ignore[arg-type]
        decided_at=decided_at.isoformat(),  # type: ignore[arg-type]
        **fields,
    )


def undecided(
    prepared: PreparedRequest,
    *,
    backend: str,
    decided_at: datetime,
    respond_minutes: int,
    latency_ms: dict[str, float] | None = None,
) -> DispatchDecision:
    """No model answered (Triton and the in-process fallback both failed): the report goes
    to a dispatcher with what address analysis found, never lost. Its urgency is unknown,
    so it is due as soon as the most urgent level's."""
    return _decision(
        prepared,
        respond_minutes=respond_minutes,
        code="",
        event_name="",
        urgency="",
        route="",
        unit=None,
        confidence=0.0,
        auto=False,
        review_reasons=("no_model",),
        backend=backend,
        latency_ms=dict(latency_ms or {}),
        decided_at=decided_at,
    )


@dataclass(frozen=True, slots=True)
class ModelOutputs:
    """Both models' probabilities for a batch, and which backend computed them."""

    code_probs: np.ndarray  # [n, len(code_labels)]
    route_probs: np.ndarray  # [n, len(route_labels)]
    backend: str


class ModelScorer(Protocol):
    """Runs both text models on a batch of features (Triton, ONNX Runtime, ...)."""

    def score(self, inputs: dict[str, np.ndarray]) -> ModelOutputs: ...


class ModelsUnavailable(RuntimeError):
    """No backend could run the models (the reports go to review, not lost)."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Dispatcher:
    """The whole decision for a batch: address analysis, features, both models, the rule.
    One code path for the live agent, ``citystream score`` and the evaluation."""

    def __init__(
        self,
        domain: Domain,
        policy: DispatchPolicy,
        analyser: PlaceReader,
        scorer: ModelScorer,
    ) -> None:
        self.domain = domain
        self.policy = policy
        self.analyser = analyser
        self.scorer = scorer
        self.table = RouteTable(domain, policy.code_labels, policy.route_labels)

    def decide_batch(
        self,
        requests: Sequence[DispatchRequest],
        *,
        queued_ms: Sequence[float] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> list[DispatchDecision]:
        if not requests:
            return []
        t0 = time.perf_counter()
        prepared = [prepare(r, self.analyser, self.domain) for r in requests]
        t1 = time.perf_counter()
        batch = encode_batch([p.request.text for p in prepared])
        t2 = time.perf_counter()
        try:
            outputs: ModelOutputs | None = self.scorer.score(batch.as_inputs())
            backend = outputs.backend
        except ModelsUnavailable as exc:
            outputs, backend = None, f"none: {exc}"[:200]
        t3 = time.perf_counter()
        decisions = []
        per_row = (t1 - t0) / len(requests)
        for i, item in enumerate(prepared):
            latency = {
                "queue": float(queued_ms[i]) if queued_ms is not None else 0.0,
                "address": _ms(per_row),
                "features": _ms((t2 - t1) / len(requests)),
                # The whole batch waits for the model call: each report's share is all of it.
                "inference": _ms(t3 - t2),
            }
            if outputs is None:
                decision = undecided(
                    item,
                    backend=backend,
                    decided_at=clock(),
                    respond_minutes=min(self.domain.urgency_minutes.values()),
                    latency_ms=latency,
                )
            else:
                decision = decide(
                    item,
                    outputs.code_probs[i],
                    outputs.route_probs[i],
                    self.policy,
                    self.table,
                    self.domain,
                    backend=backend,
                    decided_at=clock(),
                    latency_ms=latency,
                )
            decisions.append(decision)
        t4 = time.perf_counter()
        total_ms = _ms(t4 - t0)
        return [
            d.model_copy(
                update={
                    "latency_ms": {
                        **d.latency_ms,
                        "decide": _ms((t4 - t3) / len(requests)),
                        "total": round(d.latency_ms["queue"] + total_ms, 3),
                    }
                }
            )
            for d in decisions
        ]


def request_from_row(stored: StoredRow) -> DispatchRequest | None:
    """A stored input row (validated and normalised by ingest) as a dispatch request;
    None for rows that are not reports (video frames)."""
    row = stored.row
    if stored.table == "city_events_log":
        text = " ".join(p for p in (row["description"], row["address"]) if p)
        return DispatchRequest(
            input_id=row["event_id"],
            input_kind="city_event",
            text=text,
            received_at=row["reported_at"].replace(tzinfo=UTC),
            district=row["district"] or None,
            street=row["street"] or None,
            road=row["road"] or None,
            location_type=row["location_type"] or None,
            code=row["code"] or None,
            channel=row["source"],
        )
    if stored.table == "citizen_appeals_log":
        text = " ".join(p for p in (row["text"], row["address"]) if p)
        return DispatchRequest(
            input_id=row["appeal_id"],
            input_kind="citizen_appeal",
            text=text,
            received_at=row["received_at"].replace(tzinfo=UTC),
            district=row["district"] or None,
            channel=row["channel"],
        )
    return None


def read_request(msg: SourceMessage, ctx: IngestContext, now: datetime) -> DispatchRequest | None:
    """An input message as a dispatch request, through the same validation as the sink's
    ingest stage: a message ingest refuses (and dead-letters, once) is not dispatched."""
    outcome = ingest(msg, ctx, now)
    if not isinstance(outcome, StoredRow):
        return None
    return request_from_row(outcome)
