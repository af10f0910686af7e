"""How well duplicate merging works, on simulated bursts (``models.simulator.bursts``).

    python -m processors.merge_eval --seed 1

prints a JSON report with, per run, pairwise precision and recall (pairs of reports put in
one case that belong to one incident / all pairs of one incident), B-cubed precision and
recall, how many incidents ended whole in one case, and how often each kind of hard
negative was merged with the incident it imitates. Runs:

- ``truth``: the simulator's code and place for each report (its true district and
  street, the road and named place its address gives): the merge logic's upper bound;
- ``stated``: the same, but district and street only where the text states them (what a
  perfect reader could know);
- ``analysis``: address analysis (the live analyser; NER for the place where it found
  none) and the dispatcher's code, streamed in arrival order through a JSON round trip
  of the state, as the agent will run;
- ``analysis_citywide_key``: the same, keyed by merge class only (no district in the key):
  what reports without a district cost;
- ``analysis_batch``: the same readings through ``assign_cases`` on shuffled input, as
  ``citystream merge`` runs.

Each stream run also says how large one key's state grew (open cases, JSON bytes).

Without trained models (``make train``) the classifier is a stub: the true code, with a
share replaced by a lookalike or a random code (said in the report).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

from models.simulator.bursts import BurstReport, burst_stream
from processors.merge import (
    DEFAULT_GROUPS,
    DEFAULT_WINDOWS,
    CaseIndex,
    CaseState,
    MergeReport,
    follow,
)
from processors.merge_batch import (
    BatchInput,
    assign_cases,
    batch_policy,
    dispatcher_classifier,
    read_reports,
)
from schemas.domain import Domain

Classify = Callable[[list[str]], list[str]]
STUB_ERROR = 0.03  # the stub's share of wrong codes, about the dispatcher's on simulated text


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
    stream: Sequence[BurstReport], predicted: Mapping[str, str]
) -> dict[str, object]:
    """Per incident of 2+ reports: whole (all its reports in one case), pure (that case
    holds nothing else), fragments; and how often a hard negative joined its incident's
    case."""
    members: dict[str, list[str]] = defaultdict(list)
    case_members: dict[str, list[str]] = defaultdict(list)
    gold: dict[str, str] = {}
    for b in stream:
        rid = b.record.record_id
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


def stub_classifier(
    stream: Sequence[BurstReport], seed: int, error: float = STUB_ERROR
) -> Classify:
    """The true code of each text, a share ``error`` replaced (half by a lookalike code of
    the same merge group, half by any code)."""
    truth = {b.record.text: b.record.code for b in stream}
    codes = sorted({b.record.code for b in stream})
    rng = random.Random(seed)
    lookalike = {c: g for g in DEFAULT_GROUPS.values() for c in g}

    def classify(texts: list[str]) -> list[str]:
        out = []
        for text in texts:
            code = truth.get(text, "")
            if code and rng.random() < error:
                group = lookalike.get(code)
                code = rng.choice(group) if group and rng.random() < 0.5 else rng.choice(codes)
            out.append(code)
        return out

    return classify


def real_classifier() -> tuple[Classify | None, str]:
    """The dispatcher's code when trained models are there (``make train``)."""
    from streams.settings import Settings

    settings = Settings()
    if not settings.dispatch_policy.is_file():
        return None, f"no {settings.dispatch_policy}: run `make train`"
    try:
        from models.scoring import build_dispatcher
        from processors.dispatch import PolicyError

        dispatcher = build_dispatcher(settings)
    except (PolicyError, OSError, RuntimeError, ValueError) as exc:
        return None, f"dispatcher unavailable: {exc}"
    versions = ", ".join(f"{k} {v}" for k, v in sorted(dispatcher.policy.model_versions.items()))
    return dispatcher_classifier(dispatcher), f"dispatcher ({versions})"


def run(
    domain: Domain,
    seed: int,
    incidents: int,
    background: int,
    days: int,
    *,
    analysis: bool = True,
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
    if analysis:
        from processors.address import live_analyser

        classify, how = real_classifier()
        if classify is None:
            how = f"stub: true code, {STUB_ERROR:.0%} replaced ({how})"
            classify = stub_classifier(stream, seed)
        analyser = live_analyser(domain)
        started = time.perf_counter()
        inputs = [
            BatchInput(b.record.record_id, b.record.text, b.record.reported_at, b.record.channel)
            for b in stream
        ]
        reports = read_reports(inputs, analyser, classify, analyser.full)
        read_s = time.perf_counter() - started
        truth_codes = {b.record.record_id: b.record.code for b in stream}
        code_accuracy = _ratio(
            sum(r.code == truth_codes[r.report_id] for r in reports), len(reports)
        )
        result = _score(stream, gold, reports, stream_cases(reports, index), index)
        result["classifier"] = how
        result["code_accuracy"] = code_accuracy
        result["district_found"] = _ratio(
            sum(r.district is not None for r in reports), len(reports)
        )
        result["read_seconds"] = round(read_s, 1)
        runs["analysis"] = result
        # The same readings keyed by class only, citywide: what an unknown district costs.
        citywide = CaseIndex(replace(policy, by_district=False))
        runs["analysis_citywide_key"] = _score(
            stream, gold, reports, stream_cases(reports, citywide), citywide
        )
        shuffled = list(range(len(reports)))
        random.Random(seed).shuffle(shuffled)
        batch_reports = [reports[i] for i in shuffled]
        cases = dict(
            zip(
                (r.report_id for r in batch_reports),
                assign_cases(batch_reports, policy),
                strict=True,
            )
        )
        runs["analysis_batch"] = _score(stream, gold, reports, cases, index)
    report["runs"] = runs
    return report


def _score(
    stream: Sequence[BurstReport],
    gold: Mapping[str, str],
    reports: Sequence[MergeReport],
    run: StreamRun | Mapping[str, str],
    index: CaseIndex,
) -> dict[str, object]:
    cases = run.cases if isinstance(run, StreamRun) else run
    scores = clustering_scores(gold, cases)
    out: dict[str, object] = {
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
        "key_recall": key_recall(stream, {r.report_id: r for r in reports}, index),
        **incident_scores(stream, cases),
    }
    if isinstance(run, StreamRun):
        out["state"] = {
            "keys": run.keys,
            "max_open_cases_per_key": run.max_open_cases,
            "max_state_bytes_per_key": run.max_state_bytes,
            "case_merges": run.case_merges,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m processors.merge_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--background", type=int, default=3000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--no-analysis", action="store_true", help="truth runs only (no models)")
    args = parser.parse_args(argv)
    from streams.settings import Settings

    domain = Domain.load(Settings().domain_file)
    report = run(
        domain, args.seed, args.incidents, args.background, args.days, analysis=not args.no_analysis
    )
    json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
