"""The ``connector-sidecar`` command: ``serve`` and ``check-config`` here; the operator commands
run against a serving sidecar (``pair``, ``connections``, ...) live in ``cli_client``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys

from starlette.types import ASGIApp, Receive, Scope, Send

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
    raise SystemExit(serve(settings))


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 (and one log line) if it cannot start.

    The order makes "ready" true when it is logged: first the port is bound and listening (a
    port in use fails here), then the lifespan opens the store, starts the drivers and logs
    "sidecar ready", then hypercorn serves the bound socket. A start-up failure is logged as
    one line naming its cause (the store's errors say which file or server, and why), never as
    a traceback; ``LOG_LEVEL=debug`` adds the traceback.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from connector_sidecar._logging import configure_logging
    from connector_sidecar.app import create_app

    configure_logging(settings.log_level, settings.log_format)
    config = Config()
    config.graceful_timeout = GRACEFUL_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    try:
        listener = _listen(settings.host, settings.port, config.backlog)
    except OSError as exc:
        return _cannot_start(f"cannot listen on {settings.host}:{settings.port}: {_why(exc)}")
    config.bind = [f"fd://{listener.detach()}"]

    started = False

    async def run() -> None:
        nonlocal started
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app = create_app(settings)
        # The lifespan runs here, around the server, so its failure arrives as the exception
        # itself (hypercorn would hand over only the traceback's text).
        async with app.router.lifespan_context(app):
            started = True
            await hypercorn_serve(_serving_only(app), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    from connector_sidecar.store import StoreError

    try:
        asyncio.run(run())
    except Exception as exc:
        cause = (
            str(exc) if isinstance(exc, StoreError | OSError) else f"{type(exc).__name__}: {exc}"
        )
        if started:
            log.debug("the sidecar failed", exc_info=True)
            log.error("the sidecar stopped: %s", cause)
            return 1
        return _cannot_start(cause)
    return 0


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6, as the address says)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn does
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _serving_only(app: ASGIApp) -> ASGIApp:
    """``app`` for hypercorn, which must not run its lifespan again: ``serve`` runs it."""

    async def serving(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    return serving


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _cannot_start(cause: str) -> int:
    log.debug("start-up failed", exc_info=True)
    log.error("cannot start: %s", cause)
    return 1
