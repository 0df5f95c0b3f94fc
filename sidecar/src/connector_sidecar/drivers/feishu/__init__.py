"""The feishu connector (see ../shared/protocols)."""

from connector_sidecar.drivers.feishu.driver import FeishuDriver

__all__ = ["FeishuDriver"]
