"""``make eval``: how well the dispatch stage does, through ``citystream score`` over files
(the live agent's path: ingest, then ``processors.dispatch.Dispatcher``), on two test sets
reported separately:

- the held-out simulated records (the training run's test split, regenerated from the
  same seed), scored against their true units (not the noisy archive);
- the hand-written reports in ``models/eval/handwritten.jsonl``, written by a person,
  independently of the simulator.

Each set is written as ``citystream score`` input (``<set>.jsonl``) and truth
(``<set>.truth.jsonl``); the command's output is compared with the truth by ``check``,
which ``citystream eval-check dispatch`` runs on any output file: the figures are
reproducible from the files alone.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from models.linear import expected_calibration_error
from streams.batch import read_jsonl

HANDWRITTEN = Path(__file__).resolve().parent / "eval" / "handwritten.jsonl"
CURVE_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
SETS = ("held_out_simulated", "handwritten")
# The place fields an inspector's report carries on the wire (models.simulator.to_wire).
_EVENT_PLACE = ("district", "street", "road")


@dataclass(frozen=True, slots=True)
class Case:
    """A test report's truth: the unit (None: it should go to review) and the code."""

    id: str
    text: str
    unit: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class Scored:
    """What ``citystream score`` said of a report (one output line)."""

    unit: str | None
    code: str
    auto: bool
    confidence: float
    review_reasons: tuple[str, ...]

    @classmethod
    def of(cls, line: Mapping[str, Any]) -> Scored:
        return cls(line["unit"], line["code"], bool(line["auto"]), float(line["confidence"]),
                   tuple(line.get("review_reasons") or ()))


def _share(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 4) if denominator else 0.0


def summarise(cases: Sequence[Case], decisions: Sequence[Scored]) -> dict[str, object]:
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


def handwritten_lines(path: Path = HANDWRITTEN) -> Iterator[tuple[dict[str, Any], Case]]:
    """(``score`` input line, truth) for each hand-written report."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        yield ({"id": item["id"], "text": item["text"], "channel": item["channel"],
                "reported_at": item["reported_at"]},
               Case(item["id"], item["text"], item.get("unit"), item.get("code")))


def held_out_lines(domain: object, config: object) -> Iterator[tuple[dict[str, Any], Case]]:
    """(``score`` input line, truth) for the training run's held-out records: what the
    live stream would carry (an inspector's report with the place the inspector stated)."""
    from models.simulator import to_wire
    from models.train import history, split_indices

    records = history(domain, config)  # type: ignore[arg-type]
    for index in split_indices(len(records), config).test:  # type: ignore[arg-type]
        record = records[index]
        wire = to_wire(record)
        line: dict[str, Any] = {"id": record.record_id, "text": record.text,
                                "channel": record.channel,
                                "reported_at": record.reported_at.isoformat()}
        line |= {k: wire[k] for k in _EVENT_PLACE if k in wire}
        yield line, Case(record.record_id, record.text, record.true_unit, record.code)


def write_set(
    out_dir: Path, name: str, pairs: Iterable[tuple[dict[str, Any], Case]]
) -> tuple[Path, Path]:
    """``<name>.jsonl`` (the command's input) and ``<name>.truth.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source, truth = out_dir / f"{name}.jsonl", out_dir / f"{name}.truth.jsonl"
    with source.open("w", encoding="utf-8") as src, truth.open("w", encoding="utf-8") as tru:
        for line, case in pairs:
            src.write(json.dumps(line, ensure_ascii=False) + "\n")
            tru.write(json.dumps({"id": case.id, "text": case.text, "unit": case.unit,
                                  "code": case.code}, ensure_ascii=False) + "\n")
    return source, truth


def check(truth: Path, output: Path) -> dict[str, object]:
    """The figures for ``citystream score``'s output against the truth, matched by id. A
    report without an output line (rejected) counts as not dispatched, and is counted."""
    cases = [Case(t["id"], t["text"], t["unit"], t["code"]) for t in read_jsonl(truth)]
    scored = {o["id"]: Scored.of(o) for o in read_jsonl(output)}
    missing = Scored(None, "", False, 0.0, ("rejected",))
    decisions = [scored.get(c.id, missing) for c in cases]
    summary = summarise(cases, decisions)
    summary["rejected"] = sum(c.id not in scored for c in cases)
    summary["misses"] = misses(cases, decisions)
    return summary


# Runs ``citystream score --input IN --output OUT`` (and the route options); 0 on success.
ScoreCommand = Callable[[Path, Path], int]


def evaluate(score: ScoreCommand, domain: object, config: object, out_dir: Path,
             policy: Mapping[str, object]) -> dict[str, object]:
    """Both sets written to ``out_dir``, scored by the command, checked."""
    started = datetime.now(UTC)
    report: dict[str, object] = {"evaluated_at": started.isoformat(timespec="seconds"),
                                 **policy}
    files: dict[str, object] = {}
    pairs = {"held_out_simulated": held_out_lines(domain, config),
             "handwritten": handwritten_lines()}
    for name in SETS:
        source, truth = write_set(out_dir, name, pairs[name])
        output = out_dir / f"{name}.scored.jsonl"
        status = score(source, output)
        if status != 0:
            raise RuntimeError(f"citystream score exited {status} on {source}")
        summary = check(truth, output)
        gone = cast(list[dict[str, object]], summary.pop("misses"))
        if name == "handwritten":
            report["handwritten_misses"] = gone
        report[name] = summary
        files[name] = {"input": str(source), "truth": str(truth), "output": str(output)}
    report["files"] = files
    return report


def misses(cases: Sequence[Case], decisions: Sequence[Scored]) -> list[dict[str, object]]:
    """The labelled reports the stage got wrong or sent to review: for reading."""
    out = []
    for case, decision in zip(cases, decisions, strict=True):
        if case.unit is not None and (decision.unit != case.unit or not decision.auto):
            out.append({
                "id": case.id,
                "text": case.text[:80],
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
