"""The Quickstart's calls to a sidecar with the sim connector, as the image and e2e tests make them.

Each helper asserts the status the README promises and returns what the tests compare, so a
wrong answer fails with the sidecar's own response text.
"""

from __future__ import annotations

import httpx


def client(url: str, token: str) -> httpx.Client:
    """An API client of the sidecar at ``url`` (its published port) with its bearer token."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def pair(api: httpx.Client, connection_id: str) -> None:
    """Pair a sim connection with autoConfirm (no QR scan): it is connected at once."""
    paired = api.post(
        "/connector-sessions",
        json={
            "kind": "sim",
            "connectionId": connection_id,
            "channelId": f"sim-{connection_id}",
            "options": {"autoConfirm": True},
        },
    )
    assert paired.status_code == 201, paired.text
    assert paired.json()["status"] == "connected", paired.text


def inject(api: httpx.Client, connection_id: str, content: str, message_id: str) -> str:
    """A message from the sim user "alice"; returns the event's id."""
    injected = api.post(
        f"/sim/connections/{connection_id}/messages",
        json={"peerId": "alice", "content": content, "messageId": message_id},
    )
    assert injected.status_code == 202, injected.text
    event_id: str = injected.json()["eventId"]
    return event_id


def echoes(api: httpx.Client, connection_id: str) -> list[str]:
    """What the echo host sent back through the sidecar, oldest first."""
    response = api.get(f"/sim/connections/{connection_id}/sent")
    assert response.status_code == 200, response.text
    return [
        item["content"] for item in response.json()["items"] if item["content"].startswith("echo: ")
    ]


def deliveries(api: httpx.Client, connection_id: str) -> list[tuple[str, str]]:
    """(eventId, status) of each event of the connection in the outbox."""
    response = api.get("/deliveries", params={"connectionId": connection_id})
    assert response.status_code == 200, response.text
    return [(item["eventId"], item["status"]) for item in response.json()["items"]]


def replicas(api: httpx.Client) -> dict[str, str | None]:
    """Which replica runs each connection (``GET /connections``), as this sidecar sees it."""
    response = api.get("/connections")
    assert response.status_code == 200, response.text
    return {item["connectionId"]: item["replica"] for item in response.json()["items"]}
