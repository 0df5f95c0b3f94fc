"""``python -m connector_sidecar serve``: the same as the ``connector-sidecar`` command."""

from connector_sidecar.cli import main

main()
