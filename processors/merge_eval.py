"""How well duplicate merging works, on simulated bursts (``models.simulator.bursts``).

    citystream eval --parts merge

writes a JSON report with, per run, pairwise precision and recall (pairs of reports put in
one case that belong to one incident / all pairs of one incident), B-cubed precision and
recall, how many incidents ended whole in one case, and how often each kind of hard
negative was merged with the incident it imitates. Runs:

- ``truth``: the simulator's code and place for each report (its true district and
  street, the road and named place its address gives): the merge logic's upper bound;
- ``stated``: the same, but district and street only where the text states them (what a
  perfect reader could know);
- ``command``: ``citystream merge`` over the reports written to a file in shuffled
  order (``write_merge_set``): each report decided as the live agent decides it (ingest,
  address analysis, the trained dispatcher), merged by the case stage's own logic; its
  output checked against the truth file by ``check_merge`` (``citystream eval-check
  merge`` on any output). It needs trained models (``make train``).

Each stream run also says how large one key's state grew (open cases, JSON bytes).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from models.simulator.bursts import BurstReport, burst_stream
from processors.merge import (
    DEFAULT_GROUPS,
    DEFAULT_WINDOWS,
    CaseIndex,
    CaseState,
    MergeReport,
    follow,
)
from processors.merge_batch import batch_policy
from schemas.domain import Domain
from streams.batch import read_jsonl

# Runs ``citystream merge --input IN --output OUT``; 0 on success.
MergeCommand = Callable[[Path, Path], int]
DATA_DIR = Path("bench-results/eval-data")
# The place fields an inspector's report carries on the wire (models.simulator.to_wire).
_EVENT_PLACE = ("district", "street", "road")


@dataclass(frozen=True, slots=True)
class GoldReport:
    """What the truth says of a report: its incident (None: alone) and the incident's kind."""

    id: str
    incident_id: str | None
    kind: str


def gold_of(stream: Sequence[BurstReport]) -> list[GoldReport]:
    return [GoldReport(b.record.record_id, b.incident_id, b.kind) for b in stream]


# ---- scoring -------------------------------------------------------------------------------
def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 1.0


def _f1(p: float, r: float) -> float:
    return round(2 * p * r / (p + r), 4) if p + r else 0.0


@dataclass(frozen=True, slots=True)
class Scores:
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float


def clustering_scores(gold: Mapping[str, str], predicted: Mapping[str, str]) -> Scores:
    """Pairwise and B-cubed scores of ``predicted`` (report -> case) against ``gold``
    (report -> incident; a report alone in its incident is a singleton)."""
    ids = list(gold)
    gold_sizes = Counter(gold[i] for i in ids)
    pred_sizes = Counter(predicted[i] for i in ids)
    both = Counter((gold[i], predicted[i]) for i in ids)
    same_both = sum(_pairs(n) for n in both.values())
    pred_pairs = sum(_pairs(n) for n in pred_sizes.values())
    gold_pairs = sum(_pairs(n) for n in gold_sizes.values())
    p, r = _ratio(same_both, pred_pairs), _ratio(same_both, gold_pairs)
    bp = sum(both[(gold[i], predicted[i])] / pred_sizes[predicted[i]] for i in ids)
    br = sum(both[(gold[i], predicted[i])] / gold_sizes[gold[i]] for i in ids)
    bp, br = _ratio(bp, len(ids)), _ratio(br, len(ids))
    return Scores(p, r, _f1(p, r), bp, br, _f1(bp, br))


def incident_scores(
    stream: Sequence[GoldReport], predicted: Mapping[str, str]
) -> dict[str, object]:
    """Per incident of 2+ reports: whole (all its reports in one case), pure (that case
    holds nothing else), fragments; and how often a hard negative joined its incident's
    case."""
    members: dict[str, list[str]] = defaultdict(list)
    case_members: dict[str, list[str]] = defaultdict(list)
    gold: dict[str, str] = {}
    for b in stream:
        rid = b.id
        gold[rid] = b.incident_id or rid
        members[gold[rid]].append(rid)
        case_members[predicted[rid]].append(rid)
    multi = [i for b in stream if b.kind == "burst" for i in [b.incident_id or ""]]
    incidents = sorted({i for i in multi if len(members[i]) >= 2})
    whole = pure = 0
    fragments = 0
    for inc in incidents:
        cases = Counter(predicted[r] for r in members[inc])
        fragments += len(cases)
        if len(cases) == 1:
            whole += 1
            (case,) = cases
            if all(gold[r] == inc for r in case_members[case]):
                pure += 1
    negatives: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    kinds = {b.incident_id: b.kind for b in stream if b.incident_id}
    for inc, kind in sorted(kinds.items()):
        if kind in ("burst", "background") or inc is None:
            continue
        anchor = inc.rsplit("-", 1)[0]
        anchor_cases = {predicted[r] for r in members.get(anchor, ())}
        negatives[kind][1] += 1
        if any(predicted[r] in anchor_cases for r in members[inc]):
            negatives[kind][0] += 1
    return {
        "incidents_2plus": len(incidents),
        "whole_share": _ratio(whole, len(incidents)),
        "whole_and_pure_share": _ratio(pure, len(incidents)),
        "fragments_per_incident": _ratio(fragments, len(incidents)),
        "hard_negatives_merged": {
            k: {"merged": m, "of": n, "share": _ratio(m, n)} for k, (m, n) in negatives.items()
        },
    }


def key_recall(
    stream: Sequence[BurstReport], reports: Mapping[str, MergeReport], index: CaseIndex
) -> float:
    """Share of same-incident pairs whose reports share a partition key (the ceiling the
    keying puts on recall)."""
    by_incident: dict[str, Counter[str | None]] = defaultdict(Counter)
    for b in stream:
        if b.incident_id is not None:
            by_incident[b.incident_id][index.key(reports[b.record.record_id])] += 1
    together = sum(_pairs(n) for keys in by_incident.values() for k, n in keys.items() if k)
    total = sum(_pairs(sum(keys.values())) for keys in by_incident.values())
    return _ratio(together, total)


# ---- runs ----------------------------------------------------------------------------------
def truth_reports(stream: Sequence[BurstReport], *, stated: bool) -> list[MergeReport]:
    out = []
    for b in stream:
        r = b.record
        out.append(
            MergeReport(
                report_id=r.record_id,
                at=r.reported_at,
                code=r.code,
                district=r.stated_district if stated else r.district,
                street=r.stated_street if stated else r.street,
                road=r.road,
                place=r.place,
                text=r.text,
                channel=r.channel,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class StreamRun:
    cases: dict[str, str]  # report -> case
    case_merges: int  # cases folded into another (Step.absorbed)
    keys: int
    max_open_cases: int  # the most open cases one key's state held
    max_state_bytes: int  # its largest JSON value


def stream_cases(
    reports: Sequence[MergeReport], index: CaseIndex, *, follow_merges: bool = True
) -> StreamRun:
    """Case ids as the agent assigns them: arrival order, one state per key, each state
    through JSON between reports (as a Faust table value); with ``follow_merges``, as a
    consumer of the case-merge events sees them in the end."""
    table: dict[str, str] = {}
    merged_into: dict[str, str] = {}
    out: dict[str, str] = {}
    most_cases = most_bytes = 0
    for report in reports:
        key = index.key(report)
        if key is None:
            out[report.report_id] = report.report_id
            continue
        stored = table.get(key)
        step = index.step(report, CaseState.from_json(json.loads(stored) if stored else None))
        table[key] = json.dumps(step.state.to_json(), ensure_ascii=False)
        most_cases = max(most_cases, len(step.state.cases))
        most_bytes = max(most_bytes, len(table[key].encode()))
        out[report.report_id] = step.case_id
        for absorbed in step.absorbed:
            merged_into[absorbed] = step.case_id
    if follow_merges:
        out = {r: follow(merged_into, c) for r, c in out.items()}
    return StreamRun(out, len(merged_into), len(table), most_cases, most_bytes)


def run(
    domain: Domain,
    seed: int,
    incidents: int,
    background: int,
    days: int,
    *,
    merge_command: MergeCommand | None = None,
    data_dir: Path = DATA_DIR,
    start: date = date(2025, 11, 3),
) -> dict[str, object]:
    policy = batch_policy(domain)
    index = CaseIndex(policy)
    stream = burst_stream(domain, seed, incidents, background, start=start, days=days)
    gold = {b.record.record_id: b.incident_id or b.record.record_id for b in stream}
    kinds = Counter(b.kind for b in stream)
    report: dict[str, object] = {
        "seed": seed,
        "stream": {
            "reports": len(stream),
            "days": days,
            "reports_per_day": round(len(stream) / days, 1),
            "incidents": incidents,
            "by_kind": dict(sorted(kinds.items())),
            "out_of_order": sum(
                1
                for a, b in zip(stream, stream[1:], strict=False)
                if b.record.reported_at < a.record.reported_at
            ),
        },
        "policy": {
            "key": "district|class" if policy.by_district else "class",
            "grace_hours": policy.grace.total_seconds() / 3600,
            "groups": {k: " ".join(v) for k, v in DEFAULT_GROUPS.items()},
            "windows_hours": {
                urgency: [w.total_seconds() / 3600, span.total_seconds() / 3600]
                for urgency, (w, span) in DEFAULT_WINDOWS.items()
            },
        },
        "runs": {},
    }
    runs: dict[str, object] = {}
    for name, stated in (("truth", False), ("stated", True)):
        reports = truth_reports(stream, stated=stated)
        runs[name] = _score(stream, gold, reports, stream_cases(reports, index), index)
    if merge_command is not None:
        source, truth = write_merge_set(stream, seed, data_dir)
        output = data_dir / "merge.cases.jsonl"
        started = time.perf_counter()
        status = merge_command(source, output)
        if status != 0:
            raise RuntimeError(f"citystream merge exited {status} on {source}")
        runs["command"] = {**check_merge(truth, output),
                           "seconds": round(time.perf_counter() - started, 1),
                           "files": {"input": str(source), "truth": str(truth),
                                     "output": str(output)}}
    report["runs"] = runs
    return report


def write_merge_set(
    stream: Sequence[BurstReport], seed: int, out_dir: Path
) -> tuple[Path, Path]:
    """``merge.jsonl`` (``citystream merge`` input, shuffled: the command must not depend
    on the order) and ``merge.truth.jsonl`` (each report's incident and its kind)."""
    from models.simulator import to_wire

    out_dir.mkdir(parents=True, exist_ok=True)
    source, truth = out_dir / "merge.jsonl", out_dir / "merge.truth.jsonl"
    order = list(range(len(stream)))
    random.Random(seed).shuffle(order)
    with source.open("w", encoding="utf-8") as src, truth.open("w", encoding="utf-8") as tru:
        for i in order:
            record = stream[i].record
            wire = to_wire(record)
            line: dict[str, object] = {"id": record.record_id, "text": record.text,
                                       "time": record.reported_at.isoformat(),
                                       "channel": record.channel}
            line |= {k: wire[k] for k in _EVENT_PLACE if k in wire}
            src.write(json.dumps(line, ensure_ascii=False) + "\n")
        for gold in gold_of(stream):
            tru.write(json.dumps({"id": gold.id, "incident": gold.incident_id,
                                  "kind": gold.kind}, ensure_ascii=False) + "\n")
    return source, truth


def check_merge(truth: Path, output: Path) -> dict[str, object]:
    """``citystream merge``'s output against the truth: clustering and incident scores. A
    report without an output line (rejected) counts as its own case, and is counted."""
    golds = [GoldReport(t["id"], t["incident"], t["kind"]) for t in read_jsonl(truth)]
    cases = {o["id"]: o["case_id"] for o in read_jsonl(output)}
    rejected = sum(g.id not in cases for g in golds)
    predicted = {g.id: cases.get(g.id, g.id) for g in golds}
    gold = {g.id: g.incident_id or g.id for g in golds}
    return {**_cluster_figures(gold, predicted), "rejected": rejected,
            **incident_scores(golds, predicted)}


def _cluster_figures(gold: Mapping[str, str], cases: Mapping[str, str]) -> dict[str, object]:
    scores = clustering_scores(gold, cases)
    return {
        "pairwise": {
            "precision": scores.pairwise_precision,
            "recall": scores.pairwise_recall,
            "f1": scores.pairwise_f1,
        },
        "bcubed": {
            "precision": scores.bcubed_precision,
            "recall": scores.bcubed_recall,
            "f1": scores.bcubed_f1,
        },
        "cases": len(set(cases.values())),
    }


def _score(
    stream: Sequence[BurstReport],
    gold: Mapping[str, str],
    reports: Sequence[MergeReport],
    run: StreamRun | Mapping[str, str],
    index: CaseIndex,
) -> dict[str, object]:
    cases = run.cases if isinstance(run, StreamRun) else run
    out: dict[str, object] = {
        **_cluster_figures(gold, cases),
        "key_recall": key_recall(stream, {r.report_id: r for r in reports}, index),
        **incident_scores(gold_of(stream), cases),
    }
    if isinstance(run, StreamRun):
        out["state"] = {
            "keys": run.keys,
            "max_open_cases_per_key": run.max_open_cases,
            "max_state_bytes_per_key": run.max_state_bytes,
            "case_merges": run.case_merges,
        }
    return out
