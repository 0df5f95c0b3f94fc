"""The connector sidecar: logs into chat platforms and bridges them to a host backend."""

from connector_sidecar._secret import Secret
from connector_sidecar._version import __version__
from connector_sidecar.app import create_app
from connector_sidecar.config import ConfigError, Settings

# Secret is public: building Settings in code (embedding, tests) needs it for the token.
__all__ = ["ConfigError", "Secret", "Settings", "__version__", "create_app"]
