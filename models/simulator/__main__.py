"""Write a simulated dispatch history as JSON Lines.

    python -m models.simulator --n 50000 --seed 1 --start 2024-01-01 --end 2024-12-31 \
        --output var/history.jsonl            # archive records (labels included)
    python -m models.simulator --n 2000 --seed 2 --wire --output var/demo.jsonl
                                              # live-stream messages, for `citystream replay`
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import orjson

from models.simulator.generator import generate_history, history_to_json, to_wire
from schemas.domain import Domain
from streams.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.simulator", description=__doc__)
    parser.add_argument("--n", type=int, default=50000, help="number of records")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2024, 12, 31))
    parser.add_argument("--wire", action="store_true", help="write wire messages, not records")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    domain = Domain.load(Settings().domain_file)
    began = time.perf_counter()
    records = generate_history(domain, args.n, seed=args.seed, start=args.start, end=args.end)
    convert = to_wire if args.wire else history_to_json
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("wb") as out:
        for record in records:
            out.write(orjson.dumps(convert(record)) + b"\n")
    seconds = time.perf_counter() - began
    print(f"{len(records)} records -> {args.output} in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
