"""``citystream bench-batch``: the batch tools' throughput and peak memory at two input
sizes, side by side.

Each command runs as its own process (``python -m streams.cli <command>``, exactly as a
user runs it) on N lines and then on ``scale`` × N lines; its peak resident memory comes
from the kernel's accounting of that child (``os.wait4``). Flat memory means the ratio of
the two peaks stays near 1 while the input grows ``scale`` times; the throughput ratio
says whether the cost per line holds. Inputs are simulated reports (``citystream
sample``), repeated under fresh ids to the size wanted. The machine may be shared and
noisy: read the ratios of one run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from streams.settings import REPO_ROOT


@dataclass(frozen=True, slots=True)
class BenchCase:
    command: str
    lines: int  # the smaller input; the larger is scale × this


# Sizes per command: a few seconds of work at the small size on 2 cores.
DEFAULT_CASES = (
    BenchCase("mask", 50_000),
    BenchCase("analyse", 20_000),
    BenchCase("score", 5_000),
    BenchCase("merge", 5_000),
)


@dataclass(frozen=True, slots=True)
class Run:
    lines: int
    seconds: float
    peak_rss_mb: float

    def to_json(self) -> dict[str, float | int]:
        return {"lines": self.lines, "seconds": round(self.seconds, 2),
                "lines_per_s": round(self.lines / self.seconds, 1) if self.seconds else 0.0,
                "peak_rss_mb": round(self.peak_rss_mb, 1)}


def sample_reports(count: int, seed: int = 12345) -> list[dict[str, Any]]:
    """Simulated reports as batch-tool input lines (id, text, channel, time)."""
    from schemas.domain import Domain
    from streams.sample import sample_records
    from streams.settings import Settings

    domain = Domain.load(Settings().domain_file)
    out = []
    for record in sample_records(domain, count, seed=seed, run_id="bench",
                                 span=timedelta(hours=24)):
        text = record.get("text") or record.get("description")
        at = record.get("received_at") or record.get("reported_at")
        if isinstance(text, str) and isinstance(at, str):
            channel = record.get("channel") or record.get("source") or "other"
            out.append({"text": text, "time": at, "channel": channel})
    return out


def input_lines(base: Sequence[dict[str, Any]], n: int) -> Iterator[str]:
    """``n`` lines cycling through ``base`` under fresh ids (``merge`` needs unique ids)."""
    for i, item in enumerate(islice(cycle(base), n)):
        yield json.dumps({"id": f"b{i}", **item}, ensure_ascii=False) + "\n"


def run_command(command: str, source: Path, output: Path, env: dict[str, str]) -> Run:
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", command, "--input", str(source),
         "--output", str(output)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    # wait4: this child's own peak memory (RUSAGE_CHILDREN would give the max of all).
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"citystream {command} exited {child.returncode}: {stderr[-2000:]}")
    lines = sum(1 for _ in output.open(encoding="utf-8"))
    return Run(lines, seconds, usage.ru_maxrss / 1024)  # Linux: ru_maxrss in KiB


def bench(cases: Sequence[BenchCase], scale: int, log: Any = print) -> dict[str, Any]:
    base = sample_reports(4000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="citystream-bench-batch-") as scratch:
        for case in cases:
            runs = []
            for n in (case.lines, case.lines * scale):
                source = Path(scratch) / f"{case.command}-{n}.jsonl"
                with source.open("w", encoding="utf-8") as f:
                    f.writelines(input_lines(base, n))
                run = run_command(case.command, source, Path(scratch) / "out.jsonl", env)
                log(f"{case.command} {n:,} lines: {run.seconds:.1f} s, "
                    f"{run.peak_rss_mb:.0f} MB peak")
                runs.append(run)
                source.unlink()
            small, large = runs
            results[case.command] = {
                "small": small.to_json(), "large": large.to_json(),
                "memory_ratio": round(large.peak_rss_mb / small.peak_rss_mb, 3),
                "throughput_ratio": round((large.lines / large.seconds)
                                          / (small.lines / small.seconds), 3),
            }
    return {
        "benchmark": "batch tools: throughput and peak memory at two input sizes",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "scale": scale,
        "commands": results,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"| command | lines | lines/s | peak MB | lines ×{report['scale']} | lines/s | "
        "peak MB | memory ratio | throughput ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for command, r in report["commands"].items():
        s, big = r["small"], r["large"]
        lines.append(
            f"| {command} | {s['lines']:,} | {s['lines_per_s']:,.0f} | {s['peak_rss_mb']:.0f} "
            f"| {big['lines']:,} | {big['lines_per_s']:,.0f} | {big['peak_rss_mb']:.0f} "
            f"| {r['memory_ratio']:.2f} | {r['throughput_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(output: Path, scale: int, only: Sequence[str] | None = None) -> int:
    cases = [c for c in DEFAULT_CASES if not only or c.command in only]
    report = bench(cases, scale)
    from streams.bench import write_bench_report

    write_bench_report(output, report, markdown(report))
    return 0
