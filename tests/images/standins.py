"""Stand-ins for the Dockerfile's base images, built locally because no registry can be reached.

- ``PYTHON_IMAGE``: a Debian bookworm root from ``debootstrap`` with Debian's ``python3``,
  ``python3-venv`` and ``python-is-python3`` (so ``python`` is on PATH, as in the official
  ``python`` image) and ``ca-certificates``; documentation is left out, as in Debian's slim images.
- ``UV_IMAGE``: an image holding only ``/uv`` and ``/uvx``, taken from the ``uv`` wheel (the static
  musl build) of the version the Dockerfile's ``UV_IMAGE`` names, like ``ghcr.io/astral-sh/uv``.

Rules:
- Each image is tagged with a key made from what it is built from (the recipe below, the suite,
  the package list; the uv version), so a change to any of them builds a new one.
- Built once per machine: the tag is looked for in podman's storage first, then the root
  tarball or the wheel in the cache directory (``CONNECTOR_IMAGE_CACHE``, default
  ``/var/cache/connector-images``, outside the repository), and only then built from the network.
- A file lock keeps two runs on the same machine from building the same thing at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.images.podman import run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
#: What the official image's configuration sets that the Dockerfile and the containers rely on.
PYTHON_CONFIG = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
#: Bump when the recipe changes in a way the key below does not see.
RECIPE = 1
DEBOOTSTRAP_TIMEOUT = 900.0


def cache_dir() -> Path:
    path = Path(os.environ.get("CONNECTOR_IMAGE_CACHE", "/var/cache/connector-images"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with (cache_dir() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _exists(image: str) -> bool:
    return run(["podman", "image", "exists", image], check=False).returncode == 0


def _import(tarball: Path, image: str, changes: tuple[str, ...]) -> None:
    options = [part for change in changes for part in ("--change", change)]
    run(["podman", "import", *options, tarball, image], timeout=300)


def python_image() -> str:
    """The stand-in for ``PYTHON_IMAGE``, built if this machine does not have it yet."""
    recipe = repr((RECIPE, SUITE, MIRROR, PACKAGES, PYTHON_CONFIG)).encode()
    key = hashlib.sha256(recipe).hexdigest()[:12]
    image = f"localhost/connector-stand-in-python:{SUITE}-{key}"
    with _locked("python"):
        if _exists(image):
            return image
        tarball = cache_dir() / f"python-{SUITE}-{key}.tar"
        if not tarball.is_file():
            _debootstrap(tarball)
        _import(tarball, image, PYTHON_CONFIG)
    return image


def _debootstrap(tarball: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="debootstrap-") as work:
        root = Path(work) / "root"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                root,
                MIRROR,
            ],
            timeout=DEBOOTSTRAP_TIMEOUT,
        )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        for docs in ("usr/share/doc", "usr/share/man", "usr/share/info"):
            shutil.rmtree(root / docs, ignore_errors=True)
            (root / docs).mkdir()
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."], timeout=300)
        partial.rename(tarball)


def uv_version(dockerfile: Path) -> str:
    """The uv version the Dockerfile's ``UV_IMAGE`` default names."""
    match = re.search(r"^ARG UV_IMAGE=\S+:(\d+\.\d+\.\d+)\s*$", dockerfile.read_text(), re.M)
    if not match:
        raise ValueError(f"{dockerfile}: no `ARG UV_IMAGE=…:<version>` line")
    return match.group(1)


def uv_image(version: str) -> str:
    """The stand-in for ``UV_IMAGE``: ``/uv`` and ``/uvx`` from the uv wheel of ``version``."""
    image = f"localhost/connector-stand-in-uv:{version}"
    with _locked("uv"):
        if _exists(image):
            return image
        wheels = cache_dir() / "wheels"
        wheel = next(wheels.glob(f"uv-{version}-*musllinux*x86_64.whl"), None)
        if wheel is None:
            _download_uv_wheel(version, wheels)
            wheel = next(wheels.glob(f"uv-{version}-*musllinux*x86_64.whl"))
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="uv-") as work:
            root = Path(work)
            with zipfile.ZipFile(wheel) as archive:
                for tool in ("uv", "uvx"):
                    target = root / tool
                    target.write_bytes(archive.read(f"uv-{version}.data/scripts/{tool}"))
                    target.chmod(0o755)
            tarball = root / "uv.tar"
            run(["tar", "--numeric-owner", "-C", root, "-cf", tarball, "uv", "uvx"])
            _import(tarball, image, ())
    return image


def machine_python() -> str:
    """The machine's Python (the Makefile exports it as UV_PYTHON), which has pip."""
    return os.environ.get("UV_PYTHON") or shutil.which("python3") or "python3"


def _download_uv_wheel(version: str, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # the machine's pip, with its own index and TLS settings
        [
            machine_python(),
            "-m",
            "pip",
            "download",
            "--quiet",
            f"uv=={version}",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--platform",
            "musllinux_1_1_x86_64",
            "--dest",
            str(into),
        ],
        check=True,
        timeout=300,
    )
