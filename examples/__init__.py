"""Runnable examples built on the SDK (``python -m examples.echo_host``)."""
