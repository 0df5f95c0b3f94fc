"""``python -m bench [name ...] [--smoke] [--runs N] [--database-url URL]``: run every
``bench/bench_*.py`` (or the named ones) in turn; each prints ratios against a baseline taken in
the same run. ``--smoke`` runs every step with tiny counts, to prove the harness works; its
numbers mean nothing."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from bench._options import Options


def main(argv: list[str]) -> int:
    modules = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"some of: {', '.join(modules)}")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: does it run?")
    parser.add_argument("--runs", type=int, default=3, help="runs of the system benchmark")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SIDECAR_DATABASE_URL") or None,
        help="the sidecar's SIDECAR_DATABASE_URL (default: SQLite in a temporary directory)",
    )
    args = parser.parse_args(argv)
    wanted = [
        m
        for m in modules
        if not args.names or m.removeprefix("bench_") in args.names or m in args.names
    ]
    if not wanted:
        print(
            f"no benchmark matches {args.names}; there are: {', '.join(modules)}", file=sys.stderr
        )
        return 2
    if args.smoke:
        options = Options.smoke_test(args.database_url)
    else:
        options = Options(runs=args.runs, seconds=args.seconds, database_url=args.database_url)
    for name in wanted:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"bench.{name}").main(options)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
