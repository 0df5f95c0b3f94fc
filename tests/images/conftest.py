"""The image tests' set-up: stand-in bases, both images built from the Dockerfile, cleanup.

These tests run only under ``make image-test`` (which sets ``CONNECTOR_IMAGE_TEST=1``); the
ordinary ``make test`` deselects them, because they need podman and build images. Without
podman they skip with one line, or fail when ``CI=true``.

Images are built with ``buildah bud --isolation=chroot --format docker --layers`` (the docker
format keeps HEALTHCHECK; ``--layers`` reuses the dependency layers between runs). Package
downloads inside the build use the host's CA bundle, mounted for the build only, and uv's
system-certificates setting, passed as a build argument: neither is part of an image.
"""

from __future__ import annotations

import base64
import os
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.images import compose_file, standins
from tests.images.host_tools import on_ci
from tests.images.podman import BUILD_TIMEOUT, Podman, missing_tools, run

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENABLED = os.environ.get("CONNECTOR_IMAGE_TEST") == "1"
#: Image sizes in bytes by target, printed at the end of the run.
SIZES: dict[str, int] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: builds and runs the container images (make image-test)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test here ``image``; leave them out unless make image-test asked for them."""
    ours = [item for item in items if HERE in Path(item.path).resolve().parents]
    for item in ours:
        item.add_marker(pytest.mark.image)
        # The first test's setup builds everything: a cold run (debootstrap, two image builds)
        # takes minutes, more than the suite's 300 s default.
        item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT * 2))
    if not ENABLED and ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if item not in ours]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SIZES:
        terminalreporter.section("image sizes")
        for target, size in SIZES.items():
            terminalreporter.write_line(f"{target}: {size / 1e6:.0f} MB ({size} bytes)")


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """A podman session; whatever a test created is removed at the end, pass or fail."""
    missing = missing_tools()
    if missing:
        message = (
            f"{', '.join(missing)} not found: run `make image-test`, which installs them on CI"
        )
        if on_ci():
            pytest.fail(message)
        pytest.skip(message)
    session = Podman()
    try:
        yield session
    finally:
        session.cleanup()


@pytest.fixture(scope="session")
def base_images(podman: Podman) -> dict[str, str]:
    """The stand-ins for PYTHON_IMAGE and UV_IMAGE, built once per machine."""
    return {
        "PYTHON_IMAGE": standins.python_image(),
        "UV_IMAGE": standins.uv_image(standins.uv_version(ROOT / "Dockerfile")),
    }


def _host_ca_bundle() -> Path | None:
    candidates = [os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="session")
def compose_env() -> dict[str, str]:
    """The .env the tests use: .env.example with fresh tokens and a signing secret."""
    env = compose_file.read_env_file(ROOT / ".env.example")
    env["EXTERNAL_CONNECTOR_TOKEN"] = "api-" + secrets.token_urlsafe(16)
    env["BRIDGE_TOKEN"] = "bridge-" + secrets.token_urlsafe(16)
    env["BRIDGE_SIGNING_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return env


@pytest.fixture(scope="session")
def services(compose_env: dict[str, str]) -> dict[str, compose_file.Service]:
    """compose.yaml's services with ``compose_env`` as the .env file."""
    return compose_file.load(compose_env)


@pytest.fixture(scope="session")
def images(
    podman: Podman, base_images: dict[str, str], services: dict[str, compose_file.Service]
) -> dict[str, str]:
    """Each compose service's image, built from the real Dockerfile and tagged as compose names it."""
    built = {}
    mount = []
    ca_bundle = _host_ca_bundle()
    if ca_bundle is not None:
        mount = ["--volume", f"{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    for name, service in services.items():
        run(
            [
                "buildah",
                "bud",
                "--isolation=chroot",
                "--format",
                "docker",
                "--layers",
                "--pull=never",
                "--target",
                service.target,
                "--tag",
                service.image,
                "--build-arg",
                f"PYTHON_IMAGE={base_images['PYTHON_IMAGE']}",
                "--build-arg",
                f"UV_IMAGE={base_images['UV_IMAGE']}",
                "--build-arg",
                "UV_SYSTEM_CERTS=true",
                *mount,
                "--file",
                ROOT / "Dockerfile",
                ROOT,
            ],
            timeout=BUILD_TIMEOUT,
        )
        built[name] = service.image
        SIZES[service.target] = int(podman.image_inspect(service.image)["Size"])
    return built
