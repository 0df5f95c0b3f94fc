"""``__all__`` of ``connector_contracts`` and ``connector_sidecar`` names exactly what is public."""

from __future__ import annotations

import importlib
import types
from importlib.metadata import version

import pytest

PACKAGES = {
    "connector_contracts": ("connector-contracts", ("codec", "models", "openapi")),
    "connector_sidecar": (
        "connector-sidecar",
        ("app", "chunking", "cli", "config", "problems", "sending", "store", "testing", "views"),
    ),
}


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then everything else.
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return group, name


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_all_matches_public_names(package: str) -> None:
    """``__all__`` lists every public name of the package and nothing else."""
    module = importlib.import_module(package)
    public = {
        name
        for name in dir(module)
        if not name.startswith("_")
        # submodules become attributes when imported; they are reached by their path
        and not isinstance(getattr(module, name), types.ModuleType)
    }
    assert set(module.__all__) - {"__version__"} == public


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_all_is_sorted_unique_and_resolves(package: str) -> None:
    """``__all__`` is sorted as ruff sorts it, has no repeats, and every name resolves."""
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert len(names) == len(set(names))
    assert names == sorted(names, key=_isort_key)
    for name in names:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_version_comes_from_metadata(package: str) -> None:
    """``__version__`` is the installed distribution's version."""
    module = importlib.import_module(package)
    assert module.__version__ == version(PACKAGES[package][0])


@pytest.mark.parametrize(
    "module_name",
    [f"{package}.{sub}" for package, (_, subs) in sorted(PACKAGES.items()) for sub in subs],
)
def test_submodules_define_all(module_name: str) -> None:
    """Each public submodule declares ``__all__`` with names it really defines."""
    module = importlib.import_module(module_name)
    assert module.__all__, module_name
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name}"
