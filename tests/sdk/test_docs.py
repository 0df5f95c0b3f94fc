"""The Python snippets of the README's SDK section compile, and the Starlette one really works."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from connector_contracts import encode
from connector_sdk import BridgeEndpoint, SidecarClient, SqliteDedupeStore
from connector_sdk.testing import bridge_headers, make_bridge_event

from ._starlette import TestClient

README = Path(__file__).resolve().parents[2] / "README.md"


def _sdk_section() -> str:
    """The README's ``## The host SDK`` section, up to the next second-level heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## The host SDK")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


BLOCKS = re.findall(r"```python\n(.*?)```", _sdk_section(), flags=re.DOTALL)


def test_doc_has_snippets() -> None:
    """The SDK section shows Starlette, FastAPI and import snippets."""
    assert len(BLOCKS) >= 4
    assert any("Starlette(" in block for block in BLOCKS)
    assert any("FastAPI()" in block for block in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet_compiles(index: int) -> None:
    """Each snippet is valid Python."""
    compile(BLOCKS[index], f"README.md[{index}]", "exec")


def test_starlette_snippet_replies_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The pasted Starlette app verifies, dedupes and replies through the sidecar client."""
    secret = "whsec_" + base64.b64encode(b"d" * 32).decode()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXTERNAL_CONNECTOR_TOKEN", "sidecar-token")
    monkeypatch.setenv("BRIDGE_TOKEN", "bridge-token")
    monkeypatch.setenv("BRIDGE_SIGNING_SECRET", secret)
    (snippet,) = [block for block in BLOCKS if "Starlette(" in block]
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own doc

    sent: list[dict[str, object]] = []

    def sidecar(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        return httpx.Response(
            200, json={"ok": True, "requestId": body["requestId"], "status": "sent"}
        )

    namespace["sidecar"] = SidecarClient(
        "http://sidecar.test", token="sidecar-token", transport=httpx.MockTransport(sidecar)
    )
    app = namespace["app"]
    assert isinstance(app, Starlette)
    event = make_bridge_event(content="hi")
    body = encode(event)
    headers = bridge_headers(
        body, event_id=event.event_id, token="bridge-token", signing_secrets=(secret,)
    )
    with TestClient(app) as client:
        first = client.post("/api/channel-connector-bridge/events", content=body, headers=headers)
        again = client.post("/api/channel-connector-bridge/events", content=body, headers=headers)
    assert first.json()["accepted"] is True
    assert again.json()["duplicate"] is True
    assert [s["content"] for s in sent] == ["you said: hi"]
    assert (tmp_path / "var" / "dedupe.sqlite3").is_file()
    bridge = namespace["bridge"]
    assert isinstance(bridge, BridgeEndpoint)
    assert isinstance(bridge.store, SqliteDedupeStore)
    bridge.store.close()
