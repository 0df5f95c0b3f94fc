"""Shared fixtures of the SDK tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib leaves the repository root off sys.path; the echo host tests import
# the runnable example as ``examples.echo_host``, the way ``python -m`` does from the root.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the loop the SDK's SQLite store is written for."""
    return "asyncio"
