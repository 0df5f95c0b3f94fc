"""Vendor drivers, one subpackage each, behind the interface in ``base``."""

from __future__ import annotations

from connector_sidecar.drivers.base import Driver
from connector_sidecar.drivers.feishu import FeishuDriver
from connector_sidecar.drivers.sim import SimDriver
from connector_sidecar.drivers.weixin import WeixinDriver

__all__ = ["DRIVER_CLASSES", "Driver"]

DRIVER_CLASSES: dict[str, type[Driver]] = {
    "weixin": WeixinDriver,
    "feishu": FeishuDriver,
    "sim": SimDriver,
}
