"""Starlette's TestClient, imported without its httpx deprecation warning.

Starlette 1.x wants ``httpx2`` for its TestClient and warns when it falls back to ``httpx``;
the workspace has ``httpx`` (the SDK's own dependency). The fallback works, so the one known
warning is silenced here, at the single place the TestClient is imported.
"""

from __future__ import annotations

import warnings

from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="Using `httpx` with `starlette.testclient` is deprecated",
        category=StarletteDeprecationWarning,
    )
    from starlette.testclient import TestClient

__all__ = ["TestClient"]
