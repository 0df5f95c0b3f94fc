"""``python -m bench [name ...]``: run every ``bench/bench_*.py`` (or the named ones) in turn."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    modules = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    wanted = [m for m in modules if not argv or m.removeprefix("bench_") in argv or m in argv]
    if not wanted:
        print(f"no benchmark matches {argv}; there are: {', '.join(modules)}", file=sys.stderr)
        return 2
    for name in wanted:
        print(f"== {name}")
        started = time.perf_counter()
        importlib.import_module(f"bench.{name}").main()
        print(f"   ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
