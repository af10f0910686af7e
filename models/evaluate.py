"""``make eval``: how well the dispatch stage does, through the very code the live agent
runs (``processors.dispatch.Dispatcher``), on two test sets reported separately:

- the held-out simulated records (the training run's test split, regenerated from the
  same seed), scored against their true units (not the noisy archive);
- the hand-written reports in ``models/eval/handwritten.jsonl``, written by a person,
  independently of the simulator.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from models.linear import expected_calibration_error
from processors.dispatch import Dispatcher, DispatchRequest
from schemas.records import DispatchDecision

HANDWRITTEN = Path(__file__).resolve().parent / "eval" / "handwritten.jsonl"
BATCH = 64
CURVE_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)


@dataclass(frozen=True, slots=True)
class Case:
    request: DispatchRequest
    unit: str | None  # None: a report that should go to review
    code: str | None


def decide_all(dispatcher: Dispatcher, cases: Sequence[Case]) -> list[DispatchDecision]:
    decisions: list[DispatchDecision] = []
    for start in range(0, len(cases), BATCH):
        chunk = [c.request for c in cases[start : start + BATCH]]
        decisions.extend(dispatcher.decide_batch(chunk))
    return decisions


def _share(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def summarise(cases: Sequence[Case], decisions: Sequence[DispatchDecision]) -> dict[str, object]:
    labelled = [(c, d) for c, d in zip(cases, decisions, strict=True) if c.unit is not None]
    review_items = [(c, d) for c, d in zip(cases, decisions, strict=True) if c.unit is None]
    right = [d.unit == c.unit for c, d in labelled]
    auto = [d.auto for _, d in labelled]
    auto_right = [r for r, a in zip(right, auto, strict=True) if a]
    code_right = [d.code == c.code for c, d in labelled if c.code]
    confidence = np.array([d.confidence for _, d in labelled])
    settled = np.array([d.unit is not None and not set(d.review_reasons) - {"low_confidence"}
                        for _, d in labelled])
    right_arr = np.array(right)
    curve = []
    for threshold in CURVE_THRESHOLDS:
        chosen = settled & (confidence >= threshold)
        curve.append({
            "threshold": threshold,
            "coverage": _share(int(chosen.sum()), len(labelled)),
            "accuracy": _share(int(right_arr[chosen].sum()), int(chosen.sum())),
        })
    per_code: dict[str, Counter[str]] = defaultdict(Counter)
    for c, d in labelled:
        if c.code:
            per_code[c.code][d.code] += 1
    confusion = {}
    for code in sorted(per_code):
        counts = per_code[code]
        total = sum(counts.values())
        wrong = [(k, n) for k, n in counts.most_common() if k != code]
        confusion[code] = {
            "support": total,
            "accuracy": _share(counts[code], total),
            "confused_with": [f"{k}×{n}" for k, n in wrong[:3]],
        }
    reasons = Counter(r for _, d in labelled for r in d.review_reasons)
    summary: dict[str, object] = {
        "reports": len(labelled),
        "unit_accuracy": _share(sum(right), len(right)),
        "event_type_accuracy": _share(sum(code_right), len(code_right)),
        "auto_rate": _share(sum(auto), len(auto)),
        "auto_accuracy": _share(sum(auto_right), len(auto_right)),
        "review_reasons": dict(reasons.most_common()),
        # Is the confidence a probability? |accuracy - confidence| over confidence bins.
        "calibration_error": round(expected_calibration_error(confidence, right_arr), 4),
        "coverage_accuracy_curve": curve,
        "per_code": confusion,
    }
    if review_items:
        summary["should_review"] = len(review_items)
        summary["should_review_sent_to_review"] = sum(not d.auto for _, d in review_items)
    return summary


def handwritten_cases(path: Path = HANDWRITTEN) -> list[Case]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        request = DispatchRequest(
            input_id=item["id"],
            input_kind="citizen_appeal",
            text=item["text"],
            received_at=datetime.fromisoformat(item["reported_at"]),
        )
        cases.append(Case(request, item.get("unit"), item.get("code")))
    return cases


def held_out_cases(domain: object, config: object) -> Iterator[Case]:
    from models.train import history, offline_context, request_of, split_indices

    records = history(domain, config)  # type: ignore[arg-type]
    ctx = offline_context(domain)  # type: ignore[arg-type]
    for index in split_indices(len(records), config).test:  # type: ignore[arg-type]
        record = records[index]
        yield Case(request_of(record, ctx), record.true_unit, record.code)


def evaluate(dispatcher: Dispatcher, config: object) -> dict[str, object]:
    started = datetime.now(UTC)
    simulated = list(held_out_cases(dispatcher.domain, config))
    hand = handwritten_cases()
    hand_decisions = decide_all(dispatcher, hand)
    report = {
        "evaluated_at": started.isoformat(timespec="seconds"),
        "auto_threshold": dispatcher.policy.auto_threshold,
        "target_accuracy": dispatcher.policy.target_accuracy,
        "model_versions": dispatcher.policy.model_versions,
        "held_out_simulated": summarise(simulated, decide_all(dispatcher, simulated)),
        "handwritten": summarise(hand, hand_decisions),
        "handwritten_misses": misses(hand, hand_decisions),
    }
    return report


def misses(
    cases: Sequence[Case], decisions: Sequence[DispatchDecision]
) -> list[dict[str, object]]:
    """The labelled reports the stage got wrong or sent to review: for reading."""
    out = []
    for case, decision in zip(cases, decisions, strict=True):
        if case.unit is not None and (decision.unit != case.unit or not decision.auto):
            out.append({
                "id": case.request.input_id,
                "text": case.request.text[:80],
                "expected": case.unit,
                "decided": decision.unit,
                "code": f"{decision.code} (expected {case.code})",
                "confidence": decision.confidence,
                "reasons": list(decision.review_reasons),
            })
    return out


def markdown(report: dict[str, object]) -> str:
    lines = ["| test set | reports | unit accuracy | event-type accuracy | auto-dispatched | "
             "accuracy when auto |", "|---|---|---|---|---|---|"]
    for key, title in (("held_out_simulated", "held-out simulated"),
                       ("handwritten", "hand-written")):
        s = cast(dict[str, Any], report[key])
        lines.append(
            f"| {title} | {s['reports']} | {s['unit_accuracy']:.1%} | "
            f"{s['event_type_accuracy']:.1%} | {s['auto_rate']:.1%} | {s['auto_accuracy']:.1%} |"
        )
    return "\n".join(lines) + "\n"
