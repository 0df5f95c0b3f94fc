"""Storage faults injected for real in tests (they need root on Linux): a small or read-only
file system. Under CI a fault that cannot be injected fails the test; locally it skips it with
the reason, so a laptop without root still runs the rest."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def mechanism_missing(what: str, error: BaseException | str) -> None:
    """Fail under CI (the fault must really be injected there); skip with the reason locally."""
    message = f"cannot simulate {what} here ({error}); run the tests as root on Linux"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def root_command(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, *, options: str, what: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (mount ``options``) for the test, lazily unmounted after;
    ``what`` names the fault it stands for when it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        root_command("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        mechanism_missing(what, exc)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)  # noqa: S607
