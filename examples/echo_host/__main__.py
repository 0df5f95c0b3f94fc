"""``python -m examples.echo_host``: serve the echo host with Hypercorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Final

from hypercorn.asyncio import serve
from hypercorn.config import Config

from examples.echo_host.app import create_app
from examples.echo_host.config import BRIDGE_PATH, Settings, SettingsError

logger = logging.getLogger("examples.echo_host")

#: How long open requests may run on after SIGTERM (compose's stop_grace_period is longer).
GRACEFUL_SECONDS: Final = 10.0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run(settings: Settings) -> None:
    """Serve until the process is asked to stop."""
    config = Config()
    config.bind = [_bind(settings.host, settings.port)]
    config.graceful_timeout = GRACEFUL_SECONDS
    # Hypercorn's own "-" error log would print every line twice beside the root handler.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info(
        "echo host on http://%s%s, sidecar %s",
        _bind(settings.host, settings.port),
        BRIDGE_PATH,
        settings.sidecar_url,
    )
    app = create_app(settings)
    # Hypercorn types ASGI messages more narrowly than Starlette does; the app is plain ASGI 3.
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> None:
    """Read the settings, then serve; a bad setting stops here with one line naming it."""
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"echo host: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
