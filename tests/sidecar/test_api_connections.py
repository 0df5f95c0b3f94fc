"""Connections and logout (docs/CONTRACT.md §3), the deliveries listing (§6) and the sim's routes (§8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Sidecar, SidecarFactory, assert_problem

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]

CONNECTION_FIELDS = {
    "replica",
    "connectionId",
    "channelId",
    "kind",
    "status",
    "accountId",
    "displayName",
    "lastError",
    "lastInboundAt",
    "lastOutboundAt",
    "pendingDeliveries",
    "deadDeliveries",
    "createdAt",
    "updatedAt",
}


# -- connections ----------------------------------------------------------------------------------


async def test_connections_list_is_empty_at_first(sidecar: Sidecar) -> None:
    """``GET /connections`` is ``{"items": []}`` before anything is paired."""
    response = await sidecar.client.get("/connections")
    assert response.status_code == 200
    assert response.json() == {"items": []}


async def test_connection_view(paired: Sidecar) -> None:
    """A paired connection is listed and readable with every ConnectionView field."""
    listed = (await paired.client.get("/connections")).json()["items"]
    assert [c["connectionId"] for c in listed] == ["conn_1"]
    response = await paired.client.get("/connections/conn_1")
    assert response.status_code == 200
    view = response.json()
    assert set(view) == CONNECTION_FIELDS
    assert view == listed[0]
    assert view["status"] == "connected"
    assert view["kind"] == "sim"
    assert view["channelId"] == "sim-main"
    assert view["accountId"] == "sim-conn_1"
    assert view["pendingDeliveries"] == 0
    assert view["createdAt"].endswith("Z")
    assert view["lastInboundAt"] is None
    assert view["lastOutboundAt"] is None
    assert view["replica"] == paired.settings.replica_id  # the replica running its loop


async def test_connection_view_counts_and_times(paired: Sidecar) -> None:
    """Inbound messages raise ``pendingDeliveries`` and set ``lastInboundAt``; a send sets ``lastOutboundAt``."""
    for i in range(3):
        assert (await paired.inbound(messageId=f"m{i}")).status_code == 202
    assert (await paired.send("out_1")).status_code == 200
    view = (await paired.client.get("/connections/conn_1")).json()
    assert view["pendingDeliveries"] == 3
    assert view["deadDeliveries"] == 0
    assert view["lastInboundAt"].endswith("Z")
    assert view["lastOutboundAt"].endswith("Z")


async def test_unknown_connection_is_404(sidecar: Sidecar) -> None:
    """``GET /connections/{id}`` of an unknown id is 404 ``connection_not_found``."""
    assert_problem(await sidecar.client.get("/connections/nope"), 404, "connection_not_found")


async def test_logout(paired: Sidecar) -> None:
    """Logout answers ``{"ok": true}``; the connection is ``logged_out`` and can neither send nor receive."""
    await paired.inbound(messageId="before-logout")
    response = await paired.client.post("/connections/conn_1/logout", json={})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    view = (await paired.client.get("/connections/conn_1")).json()
    assert view["status"] == "logged_out"
    # Events accepted before the logout are still there to deliver.
    assert view["pendingDeliveries"] == 1
    assert_problem(await paired.send("out_after"), 409, "connection_not_ready")
    assert_problem(await paired.inbound(messageId="after"), 409, "connection_not_ready")


async def test_logout_is_idempotent(paired: Sidecar) -> None:
    """A second logout (with no body at all) is again ``{"ok": true}``."""
    first = await paired.client.post("/connections/conn_1/logout", json={})
    second = await paired.client.post("/connections/conn_1/logout")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"ok": True}
    view = (await paired.client.get("/connections/conn_1")).json()
    assert view["status"] == "logged_out"


async def test_logout_unknown_connection_is_ok(sidecar: Sidecar) -> None:
    """Logging out an unknown connection is ``{"ok": true}`` (idempotent) and creates nothing."""
    response = await sidecar.client.post("/connections/nope/logout", json={})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert_problem(await sidecar.client.get("/connections/nope"), 404, "connection_not_found")


async def test_logout_cancels_a_pairing_session(sidecar: Sidecar) -> None:
    """Logging out a connection that is still pairing cancels its session."""
    started = (
        await sidecar.client.post(
            "/connector-sessions",
            json={"kind": "sim", "connectionId": "conn_1", "channelId": "c"},
        )
    ).json()
    response = await sidecar.client.post("/connections/conn_1/logout", json={})
    assert response.status_code == 200
    session = (await sidecar.client.get(f"/connector-sessions/{started['sessionId']}")).json()
    assert session["status"] == "cancelled"


async def test_pairing_again_after_logout_reconnects(paired: Sidecar) -> None:
    """After a logout a new pairing connects the connection again and it can send."""
    await paired.client.post("/connections/conn_1/logout", json={})
    await paired.pair("conn_1")
    assert (await paired.client.get("/connections/conn_1")).json()["status"] == "connected"
    assert (await paired.send("out_again")).status_code == 200


async def test_connections_survive_a_restart(make_sidecar: SidecarFactory, tmp_path: Path) -> None:
    """A connected sim connection is connected again after the sidecar restarts."""
    data_dir = tmp_path / "restart"
    async with make_sidecar(data_dir=data_dir) as first:
        await first.pair()
    async with make_sidecar(data_dir=data_dir) as second:
        view = (await second.client.get("/connections/conn_1")).json()
        assert view["status"] == "connected"
        assert (await second.inbound(messageId="after-restart")).status_code == 202
        assert (await second.send("out_after_restart")).status_code == 200


# -- deliveries listing ---------------------------------------------------------------------------


async def test_deliveries_list_filters_and_pages(paired: Sidecar) -> None:
    """``GET /deliveries`` pages newest first with ``nextCursor`` and filters by status and connection."""
    await paired.pair("conn_2")
    for i in range(5):
        await paired.inbound("conn_1", content=f"one {i}", messageId=f"a{i}")
    for i in range(2):
        await paired.inbound("conn_2", content=f"two {i}", messageId=f"b{i}")

    everything = (await paired.client.get("/deliveries")).json()
    assert len(everything["items"]) == 7
    assert everything["nextCursor"] is None
    assert [d["event"]["content"] for d in everything["items"][:2]] == ["two 1", "two 0"]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):  # bounded: 5 events in pages of 2 take 3 pages
        params = {"connectionId": "conn_1", "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        page = (await paired.client.get("/deliveries", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [d["event"]["messageId"] for d in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["a4", "a3", "a2", "a1", "a0"]

    pending = (await paired.client.get("/deliveries", params={"status": "pending"})).json()
    assert len(pending["items"]) == 7
    assert all(d["status"] == "pending" for d in pending["items"])
    dead = (await paired.client.get("/deliveries", params={"status": "dead"})).json()
    assert dead == {"items": [], "nextCursor": None}


async def test_delivery_view_fields(paired: Sidecar) -> None:
    """A DeliveryView carries the stored BridgeEvent with its eventId and connection fields."""
    accepted = (await paired.inbound(content="hello", messageId="m-1", userId="u-1")).json()
    [item] = (await paired.client.get("/deliveries")).json()["items"]
    assert item["eventId"] == accepted["eventId"]
    assert item["connectionId"] == "conn_1"
    assert item["status"] == "pending"
    assert item["attempts"] == 0
    assert item["createdAt"].endswith("Z")
    event = item["event"]
    assert event["eventId"] == accepted["eventId"]
    assert (event["peerId"], event["userId"], event["messageId"]) == ("peer-1", "u-1", "m-1")
    assert (event["kind"], event["channelId"], event["accountId"]) == (
        "sim",
        "sim-main",
        "sim-conn_1",
    )
    assert event["content"] == "hello"


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"status": "lost"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "s\u00b2"}, "cursor"),  # a superscript two: str.isdigit() says yes
        ({"cursor": "s" + "9" * 30}, "cursor"),  # beyond SQLite's 64-bit integers
        ({"cursor": "s" + "9" * 5000}, "cursor"),  # beyond int()'s digit limit
        ({"limit": "9" * 5000}, "limit"),
        ({"limit": ""}, "limit"),
        ({"cursor": ""}, "cursor"),
        ({"status": ""}, "status"),
    ],
)
async def test_deliveries_bad_query_is_422(
    sidecar: Sidecar, params: dict[str, str], name: str
) -> None:
    """A bad ``status``, ``limit`` or ``cursor`` is a 422 naming the query parameter."""
    response = await sidecar.client.get("/deliveries", params=params)
    problem = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == [f"$.query.{name}"]


# -- sim routes -----------------------------------------------------------------------------------


async def test_sim_inbound_is_202_with_event_id(paired: Sidecar) -> None:
    """An injected message answers 202 with an ``evt_`` eventId and the messageId (made up if absent)."""
    response = await paired.inbound(content="hi there")
    assert response.status_code == 202
    body = response.json()
    assert body["eventId"].startswith("evt_")
    assert body["messageId"]
    given = (await paired.inbound(messageId="vendor-1")).json()
    assert given["messageId"] == "vendor-1"


async def test_sim_same_message_id_twice_is_one_event(paired: Sidecar) -> None:
    """The same messageId twice yields the same eventId and one outbox row (a vendor redelivery)."""
    first = (await paired.inbound(content="hi", messageId="dup-1")).json()
    second = (await paired.inbound(content="hi", messageId="dup-1")).json()
    assert first["eventId"] == second["eventId"]
    items = (await paired.client.get("/deliveries")).json()["items"]
    assert [d["eventId"] for d in items] == [first["eventId"]]


async def test_sim_event_id_depends_on_the_connection(paired: Sidecar) -> None:
    """The same messageId on two connections makes two different events."""
    await paired.pair("conn_2")
    one = (await paired.inbound("conn_1", messageId="same")).json()
    two = (await paired.inbound("conn_2", messageId="same")).json()
    assert one["eventId"] != two["eventId"]


async def test_sim_inbound_validation_and_404(paired: Sidecar) -> None:
    """Inbound needs ``peerId`` and ``content`` (422 naming them); an unknown connection is 404."""
    response = await paired.client.post("/sim/connections/conn_1/messages", json={"content": "x"})
    problem = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == ["$.peerId"]
    response = await paired.client.post(
        "/sim/connections/conn_1/messages", json={"peerId": "p", "content": "x", "peerType": "room"}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == ["$.peerType"]
    assert_problem(await paired.inbound("nope"), 404, "connection_not_found")


async def test_sim_sent_lists_chunks(paired: Sidecar) -> None:
    """``/sent`` lists each chunk with requestId, index, provider id, peer, thread and content."""
    response = await paired.send("out_1", "hello", peer_id="peer-7")
    assert response.status_code == 200
    [item] = await paired.sent()
    assert item["requestId"] == "out_1"
    assert item["chunkIndex"] == 0
    assert item["providerMessageId"] == response.json()["providerMessageId"]
    assert (item["peerId"], item["threadId"], item["content"]) == ("peer-7", None, "hello")
    assert item["sentAt"].endswith("Z")
    assert_problem(
        await paired.client.get("/sim/connections/nope/sent"), 404, "connection_not_found"
    )


async def test_sim_faults_view_and_validation(paired: Sidecar) -> None:
    """Faults answer the whole fault state; fields left out keep their value; bad values are 422."""
    view = await paired.faults(sendFailures=2)
    assert view == {
        "sendFailures": 2,
        "sendRejects": 0,
        "sendLatencyMs": 0,
        "expireLogin": False,
        "replyWindowClosed": False,
        "sendFailuresAfter": 0,
        "uploadFailures": 0,
        "uploadRejects": 0,
    }
    view = await paired.faults(sendRejects=1)
    assert (view["sendFailures"], view["sendRejects"]) == (2, 1)
    for body, path in (
        ({"sendFailures": -1}, "$.sendFailures"),
        ({"sendLatencyMs": 60_001}, "$.sendLatencyMs"),
        ({"expireLogin": "yes"}, "$.expireLogin"),
        ({"sendRejects": 1.5}, "$.sendRejects"),
    ):
        response = await paired.client.post("/sim/connections/conn_1/faults", json=body)
        problem = assert_problem(response, 422, "validation_failed")
        assert [e["path"] for e in problem["errors"]] == [path]
    missing = await paired.client.post("/sim/connections/nope/faults", json={})
    assert_problem(missing, 404, "connection_not_found")


async def test_sim_expire_login_moves_to_auth_expired(paired: Sidecar) -> None:
    """The ``expireLogin`` fault moves the connection to ``auth_expired`` at once, with a reason."""
    await paired.faults(expireLogin=True)
    view = (await paired.client.get("/connections/conn_1")).json()
    assert view["status"] == "auth_expired"
    assert view["lastError"]
