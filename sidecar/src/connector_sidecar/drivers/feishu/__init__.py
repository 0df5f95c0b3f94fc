"""The feishu connector (see docs/protocols/feishu.md)."""

from connector_sidecar.drivers.feishu.driver import FeishuDriver

__all__ = ["FeishuDriver"]
