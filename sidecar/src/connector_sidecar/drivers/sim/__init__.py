"""The built-in simulated platform (docs/CONTRACT.md §8): the whole path with no vendor account."""

from connector_sidecar.drivers.sim.driver import SimDriver

__all__ = ["SimDriver"]
