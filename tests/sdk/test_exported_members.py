"""The package's ``__all__`` is sorted and names exactly what is public."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import connector_sdk


def test_all_matches_public_names() -> None:
    """``__all__`` lists every public name of the package and nothing else."""
    public = {
        name
        for name in dir(connector_sdk)
        if not name.startswith("_")
        # submodules become attributes when imported; they are reached by their path
        and not isinstance(getattr(connector_sdk, name), type(connector_sdk))
    }
    assert set(connector_sdk.__all__) - {"__version__"} == public


def test_all_is_sorted_and_unique() -> None:
    """``__all__`` is sorted (as ruff sorts it) and has no repeats."""
    names = list(connector_sdk.__all__)

    def isort_key(name: str) -> tuple[int, str]:
        # ruff's RUF022 order: CONSTANTS, then Classes, then everything else.
        group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
        return group, name

    assert len(names) == len(set(names))
    assert names == sorted(names, key=isort_key)


def test_every_exported_name_resolves() -> None:
    """Every name in ``__all__`` is an attribute defined in the package."""
    for name in connector_sdk.__all__:
        assert getattr(connector_sdk, name) is not None, name


def test_version_comes_from_metadata() -> None:
    """``__version__`` is the installed distribution's version."""
    from importlib.metadata import version

    assert connector_sdk.__version__ == version("connector-sdk")


def test_submodules_define_all() -> None:
    """Each public submodule declares ``__all__`` with names it really defines."""
    for module_name in ("client", "dedupe", "endpoint", "errors", "ids", "testing", "verify"):
        module = importlib.import_module(f"connector_sdk.{module_name}")
        assert module.__all__, module_name
        for name in module.__all__:
            assert hasattr(module, name), f"{module_name}.{name}"


def test_imports_without_starlette_or_hypercorn() -> None:
    """The SDK imports with Starlette and Hypercorn made unimportable."""
    code = (
        "import sys\n"
        "for name in ('starlette', 'hypercorn', 'fastapi'):\n"
        "    sys.modules[name] = None\n"
        "import connector_sdk, connector_sdk.testing\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'hypercorn'))\n"
        "print(','.join(m for m in loaded if sys.modules[m] is not None))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_every_public_call_has_a_docstring() -> None:
    """Each exported class and function, and each public method of the classes, says what it does."""
    missing = []
    for name in connector_sdk.__all__:
        value = getattr(connector_sdk, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if not inspect.getdoc(value):
            missing.append(name)
        if inspect.isclass(value) and value.__module__.startswith("connector_sdk"):
            for attr, member in vars(value).items():
                if attr.startswith("_") or not inspect.isfunction(member):
                    continue
                if not (member.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []
