"""``make dist`` builds installable wheels, and the SDK installs from them as the README says.

``connector-contracts`` is on no package index (and anyone could register the name there), so the
SDK and the sidecar pin it to exactly their own release: installed from the wheels in ``dist/``,
``pip`` can only take the contracts wheel that was built with them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def _project(member: str) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / member / "pyproject.toml").read_text())[
        "project"
    ]
    return project


def test_sdk_and_sidecar_pin_the_contracts_release_exactly() -> None:
    """The SDK and the sidecar require ``connector-contracts==<the contracts version>``."""
    version = _project("contracts")["version"]
    for member in ("sdk", "sidecar"):
        dependencies = _project(member)["dependencies"]
        assert isinstance(dependencies, list)
        [pin] = [d for d in dependencies if d.startswith("connector-contracts")]
        assert pin == f"connector-contracts=={version}", member


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_make_dist_wheels_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """``make dist`` builds the three wheels; ``pip install`` of the contracts and SDK wheels
    into a new venv gives an importable ``connector_sdk`` without the sidecar's dependencies."""
    make = shutil.which("make")
    assert make is not None
    dist = tmp_path / "dist"
    built = subprocess.run(
        [make, "-s", "dist", f"DIST_DIR={dist}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    version = _project("contracts")["version"]
    wheels = {path.name.split("-")[0]: path for path in dist.glob("*.whl")}
    assert set(wheels) == {"connector_contracts", "connector_sdk", "connector_sidecar"}
    for name in ("connector_sdk", "connector_sidecar"):
        with zipfile.ZipFile(wheels[name]) as wheel:
            metadata = wheel.read(f"{name}-{version}.dist-info/METADATA").decode()
        assert f"Requires-Dist: connector-contracts=={version}" in metadata.splitlines()

    venv = tmp_path / "venv"
    subprocess.run([BASE_PYTHON, "-m", "venv", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The README's command: the two wheels; third-party dependencies come from the index.
    installed = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            wheels["connector_contracts"],
            wheels["connector_sdk"],
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    probe = (
        "import importlib.util, connector_sdk, connector_contracts;"
        "print(connector_sdk.__version__, connector_contracts.__version__,"
        " importlib.util.find_spec('starlette') is None, connector_sdk.SidecarClient.__name__)"
    )
    imported = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == [str(version), str(version), "True", "SidecarClient"]
