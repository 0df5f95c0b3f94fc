"""``python -m tests.images.host_tools``: make sure podman, buildah, runc and debootstrap are here.

Run by ``make image-test`` before pytest. Exit codes:
- 0: everything is installed (on CI, missing packages are installed with apt-get first);
- 3: something is missing and this is not CI: one line says how to get it, and make stops
  without failing (``make image-test`` exits 0);
- 1: on CI (``CI=true``) the tools are missing and cannot be installed: the run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.images.podman import missing_tools

PACKAGES = ("podman", "buildah", "runc", "debootstrap")
SKIP = 3
HOW = "install them with `sudo apt-get install podman buildah runc debootstrap` (Debian/Ubuntu)"


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", *PACKAGES],
    ):
        subprocess.run(command, check=True, env=env, timeout=900, stdout=subprocess.DEVNULL)


def main() -> int:
    missing = missing_tools()
    if not missing:
        return 0
    if not on_ci():
        print(f"image-test skipped: {', '.join(missing)} not found; {HOW}, then run it again.")
        return SKIP
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"image-test cannot run: {', '.join(missing)} not found and no root apt-get; {HOW}.")
        return 1
    print(f"image-test: installing {' '.join(PACKAGES)} with apt-get", flush=True)
    _install()
    still_missing = missing_tools()
    if still_missing:
        print(f"image-test: still missing after apt-get: {', '.join(still_missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
