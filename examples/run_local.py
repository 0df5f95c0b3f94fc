"""``make run``: the sidecar and the example echo host on 127.0.0.1, wired together.

Tokens and the signing secret are made once and kept in ``var/local.env`` so the curl commands
you copy keep working across runs. Ctrl-C (or SIGTERM) stops both processes cleanly.

    python -m examples.run_local                 # sidecar on :8787 + echo host on :8000
    python -m examples.run_local --sidecar-only  # just the sidecar (events queue in the outbox)
    BRIDGE_URL=http://127.0.0.1:9000/events python -m examples.run_local --sidecar-only
                                                 # just the sidecar, delivering to your backend

``SIDECAR_PORT`` and ``ECHO_PORT`` move the two ports. With ``--sidecar-only`` and
``BRIDGE_URL`` the events go to your backend with the ``BRIDGE_TOKEN`` and
``BRIDGE_SIGNING_SECRET`` of ``var/local.env`` (or of the environment, when set there).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SIDECAR_PORT = int(os.environ.get("SIDECAR_PORT", "8787"))
ECHO_PORT = int(os.environ.get("ECHO_PORT", "8000"))
BRIDGE_PATH = "/api/channel-connector-bridge/events"


def _local_env(var: Path) -> dict[str, str]:
    """The dev tokens, made on the first run and reused after (kept in ``var/local.env``)."""
    local_env = var / "local.env"
    values: dict[str, str] = {}
    if local_env.exists():
        for line in local_env.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    made = {
        "EXTERNAL_CONNECTOR_TOKEN": lambda: "dev_" + secrets.token_urlsafe(18),
        "BRIDGE_TOKEN": lambda: "bridge_" + secrets.token_urlsafe(18),
        "BRIDGE_SIGNING_SECRET": lambda: (
            "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        ),
    }
    changed = False
    for key, make in made.items():
        if not values.get(key):
            values[key] = make()
            changed = True
    if changed:
        var.mkdir(parents=True, exist_ok=True)
        local_env.write_text(
            "# Made by `make run` for local development; delete it to get new tokens.\n"
            + "".join(f"{k}={v}\n" for k, v in values.items())
        )
        local_env.chmod(0o600)
    return values


def _wait_healthy(
    name: str, url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode}; see the lines above")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} did not become healthy at {url} within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the launcher the same way Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sidecar-only", action="store_true", help="start only the sidecar")
    parser.add_argument(
        "--var-dir", type=Path, default=ROOT / "var", help="tokens and data (default: ./var)"
    )
    args = parser.parse_args()
    var: Path = args.var_dir.resolve()

    tokens = _local_env(var)
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sidecar_env = {
        **base_env,
        "EXTERNAL_CONNECTOR_TOKEN": tokens["EXTERNAL_CONNECTOR_TOKEN"],
        "SIDECAR_HOST": "127.0.0.1",
        "SIDECAR_PORT": str(SIDECAR_PORT),
        "SIDECAR_DATA_DIR": str(var / "sidecar"),
    }
    if not args.sidecar_only:
        sidecar_env |= {
            "BRIDGE_URL": f"http://127.0.0.1:{ECHO_PORT}{BRIDGE_PATH}",
            "BRIDGE_TOKEN": tokens["BRIDGE_TOKEN"],
            "BRIDGE_SIGNING_SECRET": tokens["BRIDGE_SIGNING_SECRET"],
        }
    elif os.environ.get("BRIDGE_URL"):
        # Your own backend: the bridge credentials of var/local.env unless the environment has them.
        for name in ("BRIDGE_TOKEN", "BRIDGE_SIGNING_SECRET"):
            tokens[name] = os.environ.get(name) or tokens[name]
            sidecar_env[name] = tokens[name]
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def stop(*_: object) -> None:
        for _name, proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in 15 s; killing it", file=sys.stderr)
                proc.kill()

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "connector_sidecar", "serve"], env=sidecar_env
        )
        processes.append(("sidecar", sidecar))
        _wait_healthy("the sidecar", f"http://127.0.0.1:{SIDECAR_PORT}/healthz", sidecar)
        if not args.sidecar_only:
            echo_env = {
                **base_env,
                "SIDECAR_URL": f"http://127.0.0.1:{SIDECAR_PORT}",
                "EXTERNAL_CONNECTOR_TOKEN": tokens["EXTERNAL_CONNECTOR_TOKEN"],
                "BRIDGE_TOKEN": tokens["BRIDGE_TOKEN"],
                "BRIDGE_SIGNING_SECRET": tokens["BRIDGE_SIGNING_SECRET"],
                "ECHO_HOST": "127.0.0.1",
                "ECHO_PORT": str(ECHO_PORT),
                "ECHO_DATA_DIR": str(var / "echo"),
            }
            echo = subprocess.Popen(
                [sys.executable, "-m", "examples.echo_host"], env=echo_env, cwd=ROOT
            )
            processes.append(("echo host", echo))
            _wait_healthy("the echo host", f"http://127.0.0.1:{ECHO_PORT}/healthz", echo)
        bridge_url = sidecar_env.get("BRIDGE_URL") if args.sidecar_only else None
        _banner(tokens, var, echo=not args.sidecar_only, bridge_url=bridge_url)
        while all(proc.poll() is None for _, proc in processes):
            time.sleep(0.5)
        for name, proc in processes:
            if proc.poll() is not None:
                print(
                    f"{name} exited with status {proc.returncode}; stopping the rest",
                    file=sys.stderr,
                )
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
    finally:
        stop()


def _banner(
    tokens: dict[str, str], var: Path, *, echo: bool, bridge_url: str | None = None
) -> None:
    url = f"http://127.0.0.1:{SIDECAR_PORT}"
    lines = [
        "",
        "The connector sidecar is running.",
        f"  API         {url}   (OpenAPI: {url}/openapi.json)",
        f"  console     {url}/console   (API reference: {url}/docs)",
        f"  token       export TOKEN={tokens['EXTERNAL_CONNECTOR_TOKEN']}",
        f"  data        {var / 'sidecar'}",
    ]
    if echo:
        lines.append(
            f"  echo host   http://127.0.0.1:{ECHO_PORT}{BRIDGE_PATH} (answers every message with 'echo: …')"
        )
    elif bridge_url:
        lines += [
            f"  bridge      {bridge_url}",
            f"              Authorization: Bearer <BRIDGE_TOKEN>, signed with BRIDGE_SIGNING_SECRET ({var / 'local.env'})",
        ]
    else:
        lines.append(
            "  bridge      none: events wait in the outbox (BRIDGE_URL=… make run-sidecar delivers them)"
        )
    lines += [
        "",
        "Try it (see README.md, Quickstart):",
        f"  export TOKEN={tokens['EXTERNAL_CONNECTOR_TOKEN']}",
        f'  curl -s -X POST {url}/connector-sessions -H "Authorization: Bearer $TOKEN" \\',
        '       -d \'{"kind":"sim","connectionId":"demo","channelId":"sim-demo","options":{"autoConfirm":true}}\'',
        f'  curl -s -X POST {url}/sim/connections/demo/messages -H "Authorization: Bearer $TOKEN" \\',
        '       -d \'{"peerId":"alice","content":"hello"}\'',
        f'  curl -s {url}/sim/connections/demo/sent -H "Authorization: Bearer $TOKEN"',
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
