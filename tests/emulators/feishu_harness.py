"""The Feishu emulator as a real process, with a small client for its control API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx

from connector_sidecar.testing import ManagedProcess, free_port, wait_until

HERE = Path(__file__).parent


class FeishuEmulatorProcess(ManagedProcess):
    """``python tests/emulators/feishu.py`` on two free loopback ports (HTTP and websocket)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.ws_port = free_port()
        argv = [
            sys.executable,
            str(HERE / "feishu.py"),
            "--port",
            str(self.port),
            "--ws-port",
            str(self.ws_port),
        ]
        tmp_path.mkdir(parents=True, exist_ok=True)
        super().__init__(argv, env=_python_env(), log_path=tmp_path / "feishu-emulator.log")
        # A fresh connection per control call: the emulator (Hypercorn) closes connections idle
        # for 5 s, and a pooled one reused as it closes fails with "Server disconnected".
        self._client = httpx.Client(
            base_url=self.url, timeout=15, limits=httpx.Limits(max_keepalive_connections=0)
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lark_url(self) -> str:
        return f"{self.url}/lark"

    def sidecar_env(self) -> dict[str, str]:
        """What a sidecar needs to talk to this emulator instead of Feishu and Lark."""
        return {
            "FEISHU_BASE_URL": self.url,
            "LARK_BASE_URL": self.lark_url,
            "SIDECAR_CONNECTORS": "feishu,sim",
        }

    def start(self) -> None:
        super().start()

        def healthy() -> bool:
            if not self.running:
                raise RuntimeError(f"the emulator exited early:\n{self.log_tail()}")
            return self._client.get("/_emulator/health").status_code == 200

        wait_until(healthy, timeout=30, what="the Feishu emulator")

    def terminate(self, timeout: float = 20.0) -> int:
        self._client.close()
        return super().terminate(timeout)

    # -- control ----------------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._client.post(f"/_emulator{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    def get(self, route: str, **params: str) -> Any:
        response = self._client.get(f"/_emulator{route}", params=params)
        response.raise_for_status()
        return response.json()

    def create_app(self, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/apps", spec)
        return result

    def update_app(self, app_id: str, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.post(f"/apps/{app_id}", spec)
        return result

    def push(self, app_id: str, **spec: Any) -> dict[str, Any]:
        """An inbound message event: over the long connection, or ``via="webhook", url=…``."""
        result: dict[str, Any] = self.post(f"/apps/{app_id}/events", spec)
        return result

    def configure(self, **spec: Any) -> None:
        self.post("/config", spec)

    def fault(self, op: str, code: int, *, status: int = 400, count: int = 1, **extra: Any) -> None:
        self.post("/faults", {"op": op, "code": code, "status": status, "count": count, **extra})

    def ws_state(self, app_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/apps/{app_id}/ws")
        return result

    def drop_ws(self, app_id: str, mode: str = "abort") -> int:
        dropped: int = self.post(f"/apps/{app_id}/ws/drop", {"mode": mode})["dropped"]
        return dropped

    def sent(self, app_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/sent", appId=app_id)["items"]
        return items

    def calls(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/calls", path=path)["items"]
        return items

    def webhooks(self, app_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(f"/apps/{app_id}/webhooks")["items"]
        return items

    def withdraw(self, message_id: str) -> None:
        self.post(f"/messages/{message_id}/withdraw")

    def verify_url(self, app_id: str, url: str, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.post(f"/apps/{app_id}/verify-url", {"url": url, **spec})
        return result

    def scan(self, **spec: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/registrations/scan", spec)
        return result

    def registrations(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/registrations")["items"]
        return items


def _python_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
    }
