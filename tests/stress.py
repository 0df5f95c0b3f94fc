"""``make test-stress``: the whole suite several times in a row while another process keeps a core busy.

Tests that wait on a state which is true too early (a count bumped before the answer is recorded,
a reply seen before the acknowledgement is committed) pass on an idle machine and fail on a busy
one. This runs the suite ``--runs`` times (default 5) with a busy-loop process competing for the
CPU, so such a test fails here instead of in CI. The busy loop is bounded in time by itself and
is killed when the runs end, whatever happens. Each run's pytest output goes to
``var/stress/run-N.log``; the summary names the tests that failed, with how often.

    python -m tests.stress --runs 5 [-- pytest arguments]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A busy loop that stops by itself after ``limit`` seconds, so no run can leave it behind.
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def start_busy_loop(limit_seconds: float) -> subprocess.Popen[bytes]:
    """One process spinning on a core for at most ``limit_seconds``."""
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(limit_seconds)])


def run_suite(number: int, pytest_args: list[str], log_dir: Path) -> tuple[int, list[str], float]:
    """One pytest run; its exit code, the tests that failed and how long it took."""
    log_path = log_dir / f"run-{number}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", *pytest_args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    failed = FAILED.findall(log_path.read_text(errors="replace"))
    return code, failed, time.monotonic() - started


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="how many times to run the suite")
    parser.add_argument(
        "--busy-limit",
        type=float,
        default=4 * 3600.0,
        help="seconds after which the busy loop stops by itself",
    )
    parser.add_argument("--log-dir", type=Path, default=ROOT / "var" / "stress")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.log_dir.mkdir(parents=True, exist_ok=True)

    failures: Counter[str] = Counter()
    failed_runs = 0
    # SIGTERM unwinds like Ctrl-C, so the busy loop is killed below on either.
    signal.signal(signal.SIGTERM, _interrupted)
    busy = start_busy_loop(args.busy_limit)
    try:
        for number in range(1, args.runs + 1):
            code, failed, seconds = run_suite(number, args.pytest_args, args.log_dir)
            failures.update(failed)
            verdict = "passed" if code == 0 else f"FAILED (exit {code})"
            print(f"run {number}/{args.runs}: {verdict} in {seconds:.0f} s", flush=True)
            for test in failed:
                print(f"  {test}", flush=True)
            if code != 0:
                failed_runs += 1
    finally:
        busy.kill()
        busy.wait()
    print(f"{args.runs - failed_runs} of {args.runs} runs passed; logs in {args.log_dir}")
    for test, count in failures.most_common():
        print(f"  failed {count}x: {test}")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
