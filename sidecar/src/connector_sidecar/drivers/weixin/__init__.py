"""The weixin connector (see ../shared/protocols)."""

from connector_sidecar.drivers.weixin.driver import WeixinDriver

__all__ = ["WeixinDriver"]
