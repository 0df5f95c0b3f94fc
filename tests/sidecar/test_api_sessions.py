"""Connectors and pairing sessions (docs/CONTRACT.md §1, §2) with the sim connector."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from .conftest import Sidecar, SidecarFactory, assert_problem

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


def start_body(connection_id: str = "conn_1", **fields: Any) -> dict[str, Any]:
    return {
        "kind": "sim",
        "connectionId": connection_id,
        "channelId": "sim-main",
        "displayName": "Test",
        "callbackBaseUrl": "",
        "options": {},
        **fields,
    }


async def test_connectors_lists_every_kind(sidecar: Sidecar) -> None:
    """``GET /connectors`` is an array naming every kind; only configured ones are enabled."""
    response = await sidecar.client.get("/connectors")
    assert response.status_code == 200
    infos = {info["kind"]: info for info in response.json()}
    assert set(infos) == {"weixin", "feishu", "sim"}
    assert infos["sim"]["enabled"] is True
    assert infos["weixin"]["enabled"] is False
    assert infos["feishu"]["enabled"] is False
    sim = infos["sim"]
    assert sim["pairing"] == "qr"
    assert sim["displayName"]
    assert set(sim["capabilities"]) == {
        "receive_text",
        "send_text",
        "receive_media",
        "send_media",
        "direct_messages",
        "groups",
        "threads",
    }
    assert sim["optionsSchema"]["type"] == "object"
    assert "autoConfirm" in sim["optionsSchema"]["properties"]


async def test_start_session_is_201_qr_ready(sidecar: Sidecar) -> None:
    """A new sim session answers 201 ``qr_ready`` with a ``sim://pair/<sessionId>`` QR."""
    response = await sidecar.client.post("/connector-sessions", json=start_body())
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["sessionId"].startswith("cs_")
    assert view["status"] == "qr_ready"
    assert view["kind"] == "sim"
    assert view["connectionId"] == "conn_1"
    assert view["channelId"] == "sim-main"
    assert view["qrContent"] == f"sim://pair/{view['sessionId']}"
    assert view["qrImage"].startswith("data:image/png;base64,")
    assert view["expiresAt"].endswith("Z")
    assert view["accountId"] is None
    assert view["error"] is None


async def test_start_session_again_returns_the_running_one(sidecar: Sidecar) -> None:
    """While a session is not terminal, the same call returns it with 200 instead of a new one."""
    first = await sidecar.client.post("/connector-sessions", json=start_body())
    second = await sidecar.client.post("/connector-sessions", json=start_body())
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["sessionId"] == first.json()["sessionId"]


async def test_concurrent_starts_make_one_session(sidecar: Sidecar) -> None:
    """Ten simultaneous starts for one connection create exactly one session."""
    responses = await asyncio.gather(
        *(sidecar.client.post("/connector-sessions", json=start_body()) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["sessionId"] for r in responses}) == 1


async def test_a_terminal_session_does_not_block_a_new_one(sidecar: Sidecar) -> None:
    """After a session is cancelled, starting again makes a new session (201)."""
    first = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    await sidecar.client.post(f"/connector-sessions/{first['sessionId']}/cancel", json={})
    again = await sidecar.client.post("/connector-sessions", json=start_body())
    assert again.status_code == 201
    assert again.json()["sessionId"] != first["sessionId"]


async def test_auto_confirm_connects_at_once(sidecar: Sidecar) -> None:
    """``options.autoConfirm`` answers ``connected`` with account, name and a stateRef."""
    response = await sidecar.client.post(
        "/connector-sessions",
        json=start_body(options={"autoConfirm": True, "accountId": "acct-9"}),
    )
    assert response.status_code == 201
    view = response.json()
    assert view["status"] == "connected"
    assert view["accountId"] == "acct-9"
    assert view["displayName"] == "Test"
    assert view["metadata"]["stateRef"]
    connection = (await sidecar.client.get("/connections/conn_1")).json()
    assert connection["status"] == "connected"
    assert connection["accountId"] == "acct-9"


async def test_unknown_kind_is_404_connector_not_found(sidecar: Sidecar) -> None:
    """A kind this sidecar does not offer (or has disabled) is 404 ``connector_not_found``."""
    for kind in ("telegram", "weixin"):
        response = await sidecar.client.post("/connector-sessions", json=start_body(kind=kind))
        assert_problem(response, 404, "connector_not_found")


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"autoConfirm": "yes"}, "$.options.autoConfirm"),
        ({"accountId": ""}, "$.options.accountId"),
        ({"accountId": 7}, "$.options.accountId"),
    ],
)
async def test_bad_options_are_422(sidecar: Sidecar, options: dict[str, Any], path: str) -> None:
    """Options that fail the kind's schema are a 422 naming the option."""
    response = await sidecar.client.post("/connector-sessions", json=start_body(options=options))
    problem = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == [path]


async def test_options_that_are_not_an_object_are_422(sidecar: Sidecar) -> None:
    """``options`` of the wrong JSON type is a 422 naming ``$.options``."""
    response = await sidecar.client.post("/connector-sessions", json=start_body(options=[1]))
    problem = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == ["$.options"]


@pytest.mark.parametrize("field", ["kind", "connectionId", "channelId"])
async def test_missing_required_field_is_422(sidecar: Sidecar, field: str) -> None:
    """``kind``, ``connectionId`` and ``channelId`` are required; a missing one is named."""
    body = start_body()
    del body[field]
    response = await sidecar.client.post("/connector-sessions", json=body)
    problem = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == [f"$.{field}"]


async def test_optional_fields_may_be_left_out_or_null(sidecar: Sidecar) -> None:
    """``displayName``, ``callbackBaseUrl`` and ``options`` may be absent or null."""
    response = await sidecar.client.post(
        "/connector-sessions",
        json={"kind": "sim", "connectionId": "c2", "channelId": "ch", "displayName": None},
    )
    assert response.status_code == 201, response.text


async def test_get_session(sidecar: Sidecar) -> None:
    """``GET /connector-sessions/{id}`` returns the view as it stands; unknown is 404."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    response = await sidecar.client.get(f"/connector-sessions/{started['sessionId']}")
    assert response.status_code == 200
    assert response.json() == started
    missing = await sidecar.client.get("/connector-sessions/cs_nope")
    assert_problem(missing, 404, "session_not_found")


async def test_cancel_session(sidecar: Sidecar) -> None:
    """Cancel answers 200 ``cancelled`` and the session stays cancelled."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    response = await sidecar.client.post(
        f"/connector-sessions/{started['sessionId']}/cancel", json={}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["qrImage"] is None
    again = await sidecar.client.get(f"/connector-sessions/{started['sessionId']}")
    assert again.json()["status"] == "cancelled"


async def test_cancel_accepts_an_empty_body(sidecar: Sidecar) -> None:
    """A cancel with no body at all is treated like ``{}``."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    response = await sidecar.client.post(f"/connector-sessions/{started['sessionId']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


async def test_cancel_of_a_terminal_session_returns_it_unchanged(sidecar: Sidecar) -> None:
    """Cancelling a connected session changes nothing: same view, connection still connected."""
    view = await sidecar.pair()
    response = await sidecar.client.post(f"/connector-sessions/{view['sessionId']}/cancel", json={})
    assert response.status_code == 200
    assert response.json() == view
    connection = (await sidecar.client.get("/connections/conn_1")).json()
    assert connection["status"] == "connected"


async def test_cancel_unknown_session_is_404(sidecar: Sidecar) -> None:
    """Cancelling a session that does not exist is 404 ``session_not_found``."""
    response = await sidecar.client.post("/connector-sessions/cs_nope/cancel", json={})
    assert_problem(response, 404, "session_not_found")


async def test_verify_code_for_sim_is_409(sidecar: Sidecar) -> None:
    """A sim session never waits for a code: verify-code is 409 ``session_not_awaiting_code``."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    response = await sidecar.client.post(
        f"/connector-sessions/{started['sessionId']}/verify-code", json={"code": "123456"}
    )
    assert_problem(response, 409, "session_not_awaiting_code")


async def test_verify_code_unknown_session_is_404(sidecar: Sidecar) -> None:
    """verify-code on an unknown session is 404 ``session_not_found``."""
    response = await sidecar.client.post(
        "/connector-sessions/cs_nope/verify-code", json={"code": "123456"}
    )
    assert_problem(response, 404, "session_not_found")


async def test_verify_code_needs_a_code(sidecar: Sidecar) -> None:
    """verify-code without ``code`` (or with an empty one) is a 422 naming ``$.code``."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    for body in ({}, {"code": ""}):
        response = await sidecar.client.post(
            f"/connector-sessions/{started['sessionId']}/verify-code", json=body
        )
        problem = assert_problem(response, 422, "validation_failed")
        assert [e["path"] for e in problem["errors"]] == ["$.code"]


async def test_scan_connects(sidecar: Sidecar) -> None:
    """``POST /sim/sessions/{id}/scan`` confirms the pairing: session and connection connected."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    response = await sidecar.client.post(
        f"/sim/sessions/{started['sessionId']}/scan",
        json={"accountId": "wx-1", "displayName": "Alice"},
    )
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "connected"
    assert view["accountId"] == "wx-1"
    assert view["displayName"] == "Alice"
    assert view["metadata"]["stateRef"]
    connection = (await sidecar.client.get("/connections/conn_1")).json()
    assert (connection["status"], connection["accountId"]) == ("connected", "wx-1")


async def test_scan_twice_is_409_and_unknown_is_404(sidecar: Sidecar) -> None:
    """A second scan of a connected session is 409; scanning an unknown session is 404."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    first = await sidecar.client.post(f"/sim/sessions/{started['sessionId']}/scan", json={})
    assert first.status_code == 200
    second = await sidecar.client.post(f"/sim/sessions/{started['sessionId']}/scan", json={})
    assert_problem(second, 409, "session_not_scannable")
    assert_problem(
        await sidecar.client.post("/sim/sessions/cs_nope/scan", json={}), 404, "session_not_found"
    )


async def test_scan_of_a_cancelled_session_is_409(sidecar: Sidecar) -> None:
    """A cancelled session cannot be scanned any more."""
    started = (await sidecar.client.post("/connector-sessions", json=start_body())).json()
    await sidecar.client.post(f"/connector-sessions/{started['sessionId']}/cancel", json={})
    response = await sidecar.client.post(f"/sim/sessions/{started['sessionId']}/scan", json={})
    assert_problem(response, 409, "session_not_scannable")
    connection = (await sidecar.client.get("/connections/conn_1")).json()
    assert connection["status"] == "pairing"


async def test_repair_keeps_the_old_login_until_confirmed(paired: Sidecar) -> None:
    """A re-pair leaves the connection connected (and sending) until the new scan confirms it."""
    started = await paired.client.post("/connector-sessions", json=start_body())
    assert started.status_code == 201
    assert started.json()["status"] == "qr_ready"
    connection = (await paired.client.get("/connections/conn_1")).json()
    assert connection["status"] == "connected"
    assert (await paired.send("out_during_repair")).status_code == 200
    scanned = await paired.client.post(
        f"/sim/sessions/{started.json()['sessionId']}/scan", json={"accountId": "new-acct"}
    )
    assert scanned.json()["status"] == "connected"
    connection = (await paired.client.get("/connections/conn_1")).json()
    assert (connection["status"], connection["accountId"]) == ("connected", "new-acct")


async def test_sessions_survive_a_restart(make_sidecar: SidecarFactory, tmp_path: Path) -> None:
    """A session started before a restart is still readable (and scannable) after it."""
    data_dir = tmp_path / "restart"
    async with make_sidecar(data_dir=data_dir) as first:
        started = (await first.client.post("/connector-sessions", json=start_body())).json()
    async with make_sidecar(data_dir=data_dir) as second:
        view = (await second.client.get(f"/connector-sessions/{started['sessionId']}")).json()
        assert view["status"] == "qr_ready"
        assert view["qrContent"] == started["qrContent"]
        scanned = await second.client.post(f"/sim/sessions/{started['sessionId']}/scan", json={})
        assert scanned.json()["status"] == "connected"


async def test_a_connection_keeps_its_kind(make_sidecar: SidecarFactory) -> None:
    """Pairing a sim connection id as another kind is 409 ``connection_kind_conflict``; nothing starts."""
    async with make_sidecar(connectors=("sim", "weixin")) as sidecar:
        await sidecar.pair("conn_1")
        response = await sidecar.client.post("/connector-sessions", json=start_body(kind="weixin"))
        assert_problem(response, 409, "connection_kind_conflict")
        connection = (await sidecar.client.get("/connections/conn_1")).json()
        assert (connection["kind"], connection["status"]) == ("sim", "connected")
