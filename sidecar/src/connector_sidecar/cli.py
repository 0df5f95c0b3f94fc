"""The ``connector-sidecar`` command: ``serve`` and ``check-config`` here; the operator commands
run against a serving sidecar (``pair``, ``connections``, ...) live in ``cli_client``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from connector_contracts import build_openapi
from connector_sidecar import cli_client
from connector_sidecar._version import __version__
from connector_sidecar.config import ConfigError, Settings

__all__ = ["main"]

log = logging.getLogger("connector_sidecar")
GRACEFUL_SECONDS = 10.0
VERSION = f"connector-sidecar {__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="connector-sidecar", description="Connect chat platforms to a host backend."
    )
    parser.add_argument("--version", action="version", version=VERSION)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "serve the connector HTTP API (settings from the environment)"),
        ("check-config", "validate the environment settings and exit"),
        ("openapi", "print the OpenAPI document"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--version", action="version", version=VERSION)
    cli_client.add_commands(commands, VERSION)
    args = parser.parse_args(argv)

    if args.command in cli_client.COMMANDS:
        raise SystemExit(cli_client.run(args))
    if args.command == "openapi":
        print(json.dumps(build_openapi(), indent=2))
        return
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"connector-sidecar: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "check-config":
        print("configuration ok")
        return
    from connector_sidecar.store.db import DatabaseLockedError, check_unlocked

    try:
        if settings.database_url is None:  # PostgreSQL is shared by design; SQLite is not
            check_unlocked(settings.database_path)
    except DatabaseLockedError as exc:
        print(f"connector-sidecar: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(serve(settings))


def serve(settings: Settings) -> int:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from connector_sidecar._logging import configure_logging
    from connector_sidecar.app import create_app

    configure_logging(settings.log_level, settings.log_format)
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = GRACEFUL_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = create_app(settings)
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    try:
        asyncio.run(run())
    except Exception as exc:
        log.error("the sidecar stopped: %s", exc)
        return 1
    return 0
