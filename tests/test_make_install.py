"""``make install`` on a Python that refuses ``pip install`` (PEP 668) and without uv on PATH.

Debian's, Ubuntu's and Homebrew's Pythons are "externally managed": ``pip install uv`` into them
fails. The Makefile then installs uv into a venv of its own (``.tools/uv-venv``) with that
Python's venv and pip, from the package index. Here a wrapper stands in for such a Python: it is
the machine's interpreter, except that ``-m pip install`` into it fails the way PEP 668 makes it
fail (and, in the second case, ``-m venv`` fails the way it does without Debian's python3-venv).
The workspace is copied to a temporary directory, and PATH keeps no ``uv``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
_NOT_INHERITED = {"PATH", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "UV_PYTHON"}
COPIED = ("Makefile", "pyproject.toml", "uv.lock", "README.md", "contracts", "sidecar", "sdk")

# An externally-managed Python: `-m pip install` into it fails unless it targets another
# environment (`--python`); with NO_ENSUREPIP, `-m venv` fails unless it is `--without-pip`.
WRAPPER = """#!/bin/bash
args=" $* "
if [[ "$1 $2" == "-m pip" && "$args" == *" install "* && "$args" != *" --python "* ]]; then
    echo "error: externally-managed-environment" >&2
    exit 1
fi
if [[ -n "$NO_ENSUREPIP" && "$1 $2" == "-m venv" && "$args" != *" --without-pip "* ]]; then
    echo "The virtual environment was not created successfully because ensurepip is not available." >&2
    exit 1
fi
exec {python} "$@"
"""


def _path_without_uv() -> str:
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "uv").exists()
    ]
    path = os.pathsep.join(keep)
    assert shutil.which("uv", path=path) is None
    return path


def _workspace(tmp_path: Path) -> Path:
    copy = tmp_path / "clone"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", "dist", "build")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    return copy


@pytest.mark.parametrize("no_ensurepip", [False, True], ids=["venv", "no-ensurepip"])
def test_make_install_without_uv_on_an_externally_managed_python(
    tmp_path: Path, no_ensurepip: bool
) -> None:
    """``make install`` puts uv in .tools/uv-venv and the workspace in .venv, touching no
    system site-packages; the simulated Python really refuses ``pip install``."""
    if no_ensurepip and subprocess.call([BASE_PYTHON, "-m", "pip", "--version"]) != 0:
        pytest.skip(f"{BASE_PYTHON} has no pip to install into a venv made --without-pip")
    wrapper = tmp_path / "python3-managed"
    wrapper.write_text(WRAPPER.format(python=BASE_PYTHON))
    wrapper.chmod(0o755)
    # The user's environment (caches, certificates, index settings), less uv and any make or venv.
    env = {
        **{k: v for k, v in os.environ.items() if k not in _NOT_INHERITED},
        "PATH": _path_without_uv(),
        **({"NO_ENSUREPIP": "1"} if no_ensurepip else {}),
    }
    make = shutil.which("make", path=env["PATH"])
    assert make is not None
    refused = subprocess.run(
        [wrapper, "-m", "pip", "install", "uv"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "externally-managed-environment" in refused.stderr

    clone = _workspace(tmp_path)
    result = subprocess.run(
        [make, "install", f"PYTHON={wrapper}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installing it into .tools/uv-venv" in result.stdout
    assert (clone / ".tools" / "uv-venv" / "bin" / "uv").is_file()
    imported = subprocess.run(
        [clone / ".venv" / "bin" / "python", "-c", "import connector_sdk, connector_sidecar"],
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr

    # A second run finds the private uv and does not install it again.
    again = subprocess.run(
        [make, "install", f"PYTHON={wrapper}"], cwd=clone, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "installing it into" not in again.stdout
