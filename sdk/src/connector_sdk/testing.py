"""Helpers for testing a host: sample bridge events and the headers our sidecar would send."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from connector_contracts import BridgeEvent, encode
from connector_sdk._secret import Secret
from connector_sdk.verify import sign_webhook

__all__ = ["bridge_headers", "encode_event", "make_bridge_event"]


def make_bridge_event(**fields: Any) -> BridgeEvent:
    """A valid BridgeEvent of the ``sim`` connector; any field can be overridden."""
    values: dict[str, Any] = {
        "event_id": "evt_test_1",
        "timestamp": "2026-06-02T09:30:00Z",
        "delivery_attempt": 1,
        "connection_id": "conn_test",
        "channel_id": "sim-main",
        "kind": "sim",
        "account_id": "bot-1",
        "peer_id": "peer-1",
        "peer_type": "dm",
        "message_id": "in-msg-1",
        "message_type": "text",
        "content": "hello",
    }
    values.update(fields)
    return BridgeEvent(**values)


def bridge_headers(
    body: bytes,
    *,
    event_id: str,
    token: str | Secret | None = None,
    signing_secrets: Iterable[str | Secret] = (),
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers the sidecar sends with ``body``: bearer token and one signature per secret."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {Secret(token).reveal()}"
    secrets = list(signing_secrets)
    if secrets:
        sent_at = int(time.time()) if timestamp is None else timestamp
        headers["webhook-id"] = event_id
        headers["webhook-timestamp"] = str(sent_at)
        headers["webhook-signature"] = " ".join(
            sign_webhook(secret, event_id, sent_at, body) for secret in secrets
        )
    return headers


def encode_event(event: BridgeEvent) -> bytes:
    """The JSON body the sidecar POSTs for ``event``."""
    return encode(event)
