"""The ``connector-sidecar`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from connector_contracts import build_openapi
from connector_sidecar.config import ConfigError, Settings

__all__ = ["main"]

log = logging.getLogger("connector_sidecar")
GRACEFUL_SECONDS = 10.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="connector-sidecar", description="Connect chat platforms to a host backend."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="serve the connector HTTP API (settings from the environment)"
    )
    commands.add_parser("check-config", help="validate the environment settings and exit")
    commands.add_parser("openapi", help="print the OpenAPI document")
    args = parser.parse_args(argv)

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
