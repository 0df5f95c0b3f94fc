"""The weixin connector (see docs/protocols/weixin-ilink.md)."""

from connector_sidecar.drivers.weixin.driver import WeixinDriver

__all__ = ["WeixinDriver"]
