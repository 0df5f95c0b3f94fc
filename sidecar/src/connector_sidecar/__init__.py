"""Connector sidecar."""
