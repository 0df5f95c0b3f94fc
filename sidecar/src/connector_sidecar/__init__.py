"""The connector sidecar: logs into chat platforms and bridges them to a host backend."""

from importlib.metadata import PackageNotFoundError, version

from connector_sidecar.app import create_app
from connector_sidecar.config import ConfigError, Settings

try:
    __version__ = version("connector-sidecar")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = ["ConfigError", "Settings", "__version__", "create_app"]
