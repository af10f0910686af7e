"""``make train``: simulate dispatch history, fit both text models, calibrate, choose the
auto-dispatch threshold, export ONNX and write the Triton model repository (with the case
embedder for similar past cases beside them, when asked).

The models learn only from the simulated records (text and the unit that handled it);
nothing here reads the simulator's phrase material.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from models.embedding.train import EmbedderTrainingConfig
from models.export import read_model_info
from models.features import FEATURES_VERSION, SEQUENCE_LENGTH, encode_batch
from models.linear import (
    LinearTextModel,
    expected_calibration_error,
    fit_linear,
    fit_temperature,
    with_temperature,
)
from processors.address import live_analyser
from processors.dispatch import (
    DispatchPolicy,
    DispatchRequest,
    PreparedRequest,
    RouteTable,
    prepare,
    route_scores,
)
from processors.dispatch_rule import RuleError, all_routes, route_of_unit, unit_for
from processors.ingest import IngestContext, SourceMessage
from schemas.domain import Domain

CLASSIFIER = "event_classifier"
ROUTER = "dispatch_router"
ROUTER_WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    records: int = 24_000
    seed: int = 20261126
    start: date = date(2024, 1, 1)
    end: date = date(2026, 10, 31)
    calibration_share: float = 0.1
    test_share: float = 0.1
    regularisation: float = 20.0
    # Above the 95% the issue asks for: real reports are harder than held-out simulated.
    target_accuracy: float = 0.98


@dataclass(frozen=True, slots=True)
class Split:
    train: list[int]
    calibration: list[int]
    test: list[int]


def split_indices(n: int, config: TrainingConfig) -> Split:
    """A seeded permutation, so ``make eval`` regenerates the same held-out records."""
    order = np.random.default_rng(config.seed).permutation(n).tolist()
    n_cal = int(n * config.calibration_share)
    n_test = int(n * config.test_share)
    return Split(order[n_cal + n_test :], order[:n_cal], order[n_cal : n_cal + n_test])


def history(domain: Domain, config: TrainingConfig) -> list:  # list[HistoryRecord]
    from models.simulator import generate_history

    return generate_history(
        domain, config.records, seed=config.seed, start=config.start, end=config.end
    )


def offline_context(domain: Domain) -> IngestContext:
    """The ingest validation the live agent applies, for records replayed offline."""
    from streams.settings import Settings
    from streams.topics import kinds_by_topic

    settings = Settings(topic_prefix="")
    return IngestContext(
        domain, kinds_by_topic(settings), settings.max_text_chars, settings.max_message_bytes
    )


def request_of(record: object, ctx: IngestContext) -> DispatchRequest:
    """A history record as the live agent receives it: the wire message, through the same
    ingest validation and normalisation (``processors.dispatch.read_request``)."""
    import orjson

    from models.simulator import to_wire
    from processors.dispatch import read_request
    from streams.topics import spec_for_kind

    wire = to_wire(record)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    msg = SourceMessage(spec_for_kind(str(wire["kind"])).name, 0, 0, now, None,
                        orjson.dumps(wire))
    request = read_request(msg, ctx, now)
    if request is None:
        raise ValueError(f"the simulator produced a record ingest refuses: {wire}")
    return request


@dataclass(frozen=True, slots=True)
class Scored:
    """A held-out record's combined route scores, for choosing weight and threshold."""

    prepared: PreparedRequest
    code_probs: np.ndarray
    route_probs: np.ndarray
    true_unit: str


def predicted_unit(
    domain: Domain, scored: Scored, policy: DispatchPolicy, table: RouteTable
) -> tuple[str | None, float, bool]:
    """(unit or None, top combined score, place settled) under a policy's router weight."""
    scores = route_scores(scored.prepared, scored.code_probs, scored.route_probs, policy, table)
    best = int(np.argmax(scores.combined))
    route = policy.route_labels[best]
    address = scored.prepared.address
    try:
        unit = unit_for(domain, route, address.district, address.street).unit
    except RuleError:
        unit = None
    settled = (
        unit is not None
        and not address.outside_city
        and not any("conflict" in item for item in address.unresolved)
    )
    return unit, float(scores.combined[best]), settled


def isotonic_map(scores: np.ndarray, correct: np.ndarray) -> tuple[list[float], list[float]]:
    """Monotone map score -> P(right unit), as interpolation points (a handful of floats
    in the policy file rather than a pickled estimator)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(scores, correct.astype(float))
    xs = [float(x) for x in iso.X_thresholds_]
    ys = [float(y) for y in iso.y_thresholds_]
    return xs, ys


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, settled: np.ndarray,
                     target: float) -> float:
    """The lowest threshold whose auto-dispatched share (settled and at or above it) is
    right at least ``target`` of the time: the most automation that meets the target."""
    candidates = np.unique(confidence[settled])
    for threshold in candidates:  # ascending: first hit is the widest coverage
        auto = settled & (confidence >= threshold)
        if auto.sum() >= 20 and correct[auto].mean() >= target:
            return float(threshold)
    return 1.01  # nothing meets the target: everything goes to review


def coverage_curve(confidence: np.ndarray, correct: np.ndarray, settled: np.ndarray,
                   points: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99),
                   ) -> list[dict[str, float]]:
    curve = []
    for threshold in points:
        auto = settled & (confidence >= threshold)
        curve.append(
            {
                "threshold": threshold,
                "coverage": round(float(auto.mean()), 4),
                "accuracy": round(float(correct[auto].mean()) if auto.any() else 0.0, 4),
            }
        )
    return curve


def score_records(
    models: tuple[LinearTextModel, LinearTextModel],
    prepared: list[PreparedRequest],
    true_units: list[str],
) -> list[Scored]:
    batch = encode_batch([p.request.text for p in prepared])
    classifier, router = models
    code_probs = classifier.probabilities(batch)
    route_probs = router.probabilities(batch)
    return [
        Scored(p, code_probs[i], route_probs[i], true_units[i]) for i, p in enumerate(prepared)
    ]


def calibrate_policy(
    domain: Domain,
    scored: list[Scored],
    code_labels: tuple[str, ...],
    route_labels: tuple[str, ...],
    target: float,
    model_versions: dict[str, str],
) -> tuple[DispatchPolicy, dict[str, object]]:
    table = RouteTable(domain, code_labels, route_labels)
    truth = [s.true_unit for s in scored]
    best_weight, best_accuracy = 0.5, -1.0
    by_weight: dict[str, float] = {}
    for weight in ROUTER_WEIGHTS:
        policy = DispatchPolicy(code_labels, route_labels, weight, (), (), 0.0, target)
        units = [predicted_unit(domain, s, policy, table)[0] for s in scored]
        accuracy = float(np.mean([u == t for u, t in zip(units, truth, strict=True)]))
        by_weight[str(weight)] = round(accuracy, 4)
        if accuracy > best_accuracy:
            best_weight, best_accuracy = weight, accuracy
    raw = DispatchPolicy(code_labels, route_labels, best_weight, (), (), 0.0, target)
    results = [predicted_unit(domain, s, raw, table) for s in scored]
    score = np.array([r[1] for r in results])
    correct = np.array([r[0] == t for r, t in zip(results, truth, strict=True)])
    settled = np.array([r[2] for r in results])
    xs, ys = isotonic_map(score, correct)
    calibrated = np.interp(score, xs, ys)
    threshold = choose_threshold(calibrated, correct, settled, target)
    policy = DispatchPolicy(
        code_labels=code_labels,
        route_labels=route_labels,
        router_weight=best_weight,
        calibration_x=tuple(xs),
        calibration_y=tuple(ys),
        auto_threshold=threshold,
        target_accuracy=target,
        model_versions=model_versions,
        features_version=FEATURES_VERSION,
    )
    report = {
        "unit_accuracy_by_router_weight": by_weight,
        "router_weight": best_weight,
        "auto_threshold": round(threshold, 4),
        # In-sample (the map was fitted on these records): `make eval` reports it held out.
        "calibration_ece_in_sample": round(expected_calibration_error(calibrated, correct), 4),
    }
    return policy, report


def model_version(model: LinearTextModel, config: TrainingConfig) -> str:
    import hashlib

    digest = hashlib.sha256()
    digest.update(model.weights.tobytes())
    digest.update(model.bias.tobytes())
    digest.update(FEATURES_VERSION.encode())
    return f"{config.seed}-{digest.hexdigest()[:12]}"


def train(domain: Domain, repository: Path, policy_path: Path, config: TrainingConfig,
          log: object = print,
          embedder: EmbedderTrainingConfig | None = None) -> dict[str, object]:
    """Train, calibrate and export the dispatch models into ``repository``; with
    ``embedder``, also the case embedder (``models.embedding``), served next to them as
    ``case_embedder``. The embedder is cached in ``<repository>/../embedding/``: trained
    again only when its config, the code that trains it or the domain file changed."""
    from models.embedding.export import export_case_embedder
    from models.export import build_text_model
    from models.repository import write_model_repository

    say = log if callable(log) else print
    started = time.monotonic()
    records = history(domain, config)
    split = split_indices(len(records), config)
    say(f"simulated {len(records)} history records in {time.monotonic() - started:.1f} s")

    train_records = [records[i] for i in split.train]
    batch = encode_batch([r.text for r in train_records])
    code_labels = tuple(sorted(domain.event_types))
    route_labels = all_routes(domain)
    routes = [route_of_unit(domain, r.unit) for r in train_records]
    keep = [i for i, route in enumerate(routes) if route is not None]
    t0 = time.monotonic()
    classifier = fit_linear(
        CLASSIFIER, batch, [r.code for r in train_records], code_labels,
        regularisation=config.regularisation, seed=config.seed,
    )
    say(f"fitted {CLASSIFIER} in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    router_batch = type(batch)(batch.token_ids[keep], batch.token_weights[keep])
    router = fit_linear(
        ROUTER, router_batch, [routes[i] for i in keep], route_labels,
        regularisation=config.regularisation, seed=config.seed,
    )
    say(f"fitted {ROUTER} in {time.monotonic() - t0:.1f} s")

    # Temperatures on the calibration split, against the archive's own labels.
    cal_records = [records[i] for i in split.calibration]
    cal_batch = encode_batch([r.text for r in cal_records])
    code_y = np.array([code_labels.index(r.code) for r in cal_records])
    classifier = with_temperature(classifier, fit_temperature(classifier.logits(cal_batch), code_y))
    cal_routes = [route_of_unit(domain, r.unit) for r in cal_records]
    rows = [i for i, route in enumerate(cal_routes) if route is not None]
    route_y = np.array([route_labels.index(cal_routes[i]) for i in rows])  # type: ignore[arg-type]
    router_logits = router.logits(type(cal_batch)(cal_batch.token_ids[rows],
                                                  cal_batch.token_weights[rows]))
    router = with_temperature(router, fit_temperature(router_logits, route_y))

    versions = {
        CLASSIFIER: model_version(classifier, config),
        ROUTER: model_version(router, config),
    }
    # The threshold is chosen on an audited sample: the held-out records' true units (in
    # production: the dispatchers' confirmed and corrected records on dispatch.feedback).
    analyser = live_analyser(domain)
    t0 = time.monotonic()
    ctx = offline_context(domain)
    prepared = [prepare(request_of(r, ctx), analyser, domain) for r in cal_records]
    say(f"analysed {len(prepared)} addresses in {time.monotonic() - t0:.1f} s")
    scored = score_records((classifier, router), prepared, [r.true_unit for r in cal_records])
    policy, calibration_report = calibrate_policy(
        domain, scored, code_labels, route_labels, config.target_accuracy, versions
    )

    onnx_dir = repository.parent / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in (classifier, router):
        proto = build_text_model(
            name=model.name,
            version=versions[model.name],
            weights=model.weights,
            bias=model.bias,
            temperature=model.temperature,
            labels=model.labels,
            sequence_length=SEQUENCE_LENGTH,
        )
        path = onnx_dir / f"{model.name}.onnx"
        path.write_bytes(proto.SerializeToString())
        paths.append(path)
    embedder_info: dict[str, object] = {}
    if embedder is not None:
        t0 = time.monotonic()
        embedder_path = export_case_embedder(repository.parent / "embedding", embedder, log=say)
        paths.append(embedder_path)
        info = read_model_info(embedder_path)
        embedder_info = {"case_embedder": {
            "version": info.version,
            "dims": info.outputs[0].dims[0],
            "seconds": round(time.monotonic() - t0, 1),  # about 0 when cached
        }}
    write_model_repository(repository, paths)
    policy_path.parent.mkdir(parents=True, exist_ok=True)
    policy_path.write_text(json.dumps(policy.to_json(), ensure_ascii=False, indent=1) + "\n")
    report: dict[str, object] = {
        "records": len(records),
        "train": len(split.train),
        "calibration": len(split.calibration),
        "test": len(split.test),
        "temperatures": {CLASSIFIER: round(classifier.temperature, 4),
                         ROUTER: round(router.temperature, 4)},
        "model_versions": versions,
        "features_version": FEATURES_VERSION,
        **calibration_report,
        **embedder_info,
        "seconds": round(time.monotonic() - started, 1),
    }
    say(json.dumps(report, ensure_ascii=False))
    return report
