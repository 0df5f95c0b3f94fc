"""The benchmark harness itself runs: ``python -m bench --smoke`` (tiny counts, no timings checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_runs_every_benchmark() -> None:
    """Every benchmark, the real-process one included, runs to its report with tiny counts."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "VIRTUAL_ENV", "LANG")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== bench_delivery" in done.stdout
    assert "== bench_system" in done.stdout
    for label in ("inject ÷ /healthz", "/send new requestIds", "delivery ÷ plain", "idle inject"):
        assert label in done.stdout, done.stdout
