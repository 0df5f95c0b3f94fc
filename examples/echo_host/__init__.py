"""The example echo host: answers each inbound message with ``echo: <content>``.

Built only on :mod:`connector_sdk` (plus Starlette and Hypercorn to serve it). Run it with
``python -m examples.echo_host``; :mod:`examples.echo_host.config` lists its settings.
"""

from examples.echo_host.app import create_app, echo_reply, make_echo_handler
from examples.echo_host.config import BRIDGE_PATH, ENV_NAMES, Settings, SettingsError

__all__ = [
    "BRIDGE_PATH",
    "ENV_NAMES",
    "Settings",
    "SettingsError",
    "create_app",
    "echo_reply",
    "make_echo_handler",
]
