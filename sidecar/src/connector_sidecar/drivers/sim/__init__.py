"""The built-in simulated platform (CONTRACT §8): the whole path with no vendor account."""

from connector_sidecar.drivers.sim.driver import SimDriver

__all__ = ["SimDriver"]
