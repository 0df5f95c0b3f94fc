"""Conventions every route shares (docs/CONTRACT.md §0, §7): auth, problem documents, body limits, health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from connector_sidecar.problems import MAX_BODY_BYTES

from .conftest import TOKEN, Sidecar, SidecarFactory, assert_problem, send_body

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]

PROTECTED = [
    ("GET", "/connectors"),
    ("POST", "/connector-sessions"),
    ("GET", "/connector-sessions/cs_x"),
    ("POST", "/connector-sessions/cs_x/cancel"),
    ("POST", "/connector-sessions/cs_x/verify-code"),
    ("GET", "/connections"),
    ("GET", "/connections/conn_1"),
    ("POST", "/connections/conn_1/logout"),
    ("GET", "/deliveries"),
    ("POST", "/send"),
    ("GET", "/send/out_1"),
    ("POST", "/sim/sessions/cs_x/scan"),
    ("POST", "/sim/connections/conn_1/messages"),
    ("GET", "/sim/connections/conn_1/sent"),
    ("POST", "/sim/connections/conn_1/faults"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-000000", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
)
async def test_protected_routes_need_the_bearer_token(
    sidecar: Sidecar, method: str, path: str, authorization: str | None
) -> None:
    """Every non-public route answers 401 unauthorized without the right bearer token."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sidecar.app), base_url="http://sidecar"
    ) as anonymous:
        response = await anonymous.request(method, path, headers=headers, json={})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive(sidecar: Sidecar) -> None:
    """``bearer <token>`` is accepted like ``Bearer <token>``."""
    response = await sidecar.client.get("/connectors", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_public_routes_need_no_token(sidecar: Sidecar, path: str) -> None:
    """Health, readiness and the OpenAPI document answer without a token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sidecar.app), base_url="http://sidecar"
    ) as anonymous:
        response = await anonymous.get(path)
    assert response.status_code in (200, 503)
    expected = "application/problem+json" if response.status_code == 503 else "application/json"
    assert response.headers["content-type"] == expected


async def test_healthz(sidecar: Sidecar) -> None:
    """``GET /healthz`` is 200 ``{"ok": true}``."""
    response = await sidecar.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_readyz_reports_a_missing_bridge_url_without_failing(sidecar: Sidecar) -> None:
    """Without BRIDGE_URL, ``/readyz`` is 200 and names the missing bridge in ``bridge``;
    ``?strict=true`` makes it a 503 (the sidecar's own readiness is not the host's)."""
    response = await sidecar.client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["ok"], body["reasons"]) == (True, [])
    assert any("BRIDGE_URL" in reason for reason in body["bridge"])
    strict = await sidecar.client.get("/readyz?strict=true")
    problem = assert_problem(strict, 503, "not_ready")  # a problem document, with reasons
    assert problem["ok"] is False
    [reason] = [reason for reason in problem["reasons"] if "BRIDGE_URL" in reason]
    assert reason in problem["detail"]


async def test_readyz_is_503_when_the_store_cannot_take_a_write(sidecar: Sidecar) -> None:
    """A store that refuses writes is the sidecar's own trouble: 503 naming the store."""
    store = sidecar.app.state.services.store

    def broken(conn: Any, replica_id: str) -> None:
        raise RuntimeError("disk full")

    original = store.bridge.touch
    store.bridge.touch = broken
    try:
        response = await sidecar.client.get("/readyz")
    finally:
        store.bridge.touch = original
    assert response.status_code == 503
    assert any("store" in reason for reason in response.json()["reasons"])
    assert (await sidecar.client.get("/readyz")).status_code == 200


async def test_readyz_is_200_with_a_bridge(make_sidecar: SidecarFactory) -> None:
    """With a bridge configured and the store open, ``/readyz`` is 200 with no reasons."""
    async with make_sidecar(bridge_url="http://127.0.0.1:9/events") as running:
        response = await running.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "reasons": [],
        "bridge": [],
        "deliveryPaused": False,
    }


async def test_openapi_json_is_a_valid_openapi_31_document(sidecar: Sidecar) -> None:
    """``/openapi.json`` validates as OpenAPI 3.1 and lists every route of the contract."""
    response = await sidecar.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    for path in ("/connectors", "/connector-sessions", "/send", "/send/{requestId}", "/deliveries"):
        assert path in document["paths"]


async def test_unknown_route_is_a_404_problem(sidecar: Sidecar) -> None:
    """An unknown path is a 404 problem document, not an HTML page."""
    assert_problem(await sidecar.client.get("/no/such/route"), 404, "not_found")


async def test_wrong_method_is_a_405_problem(sidecar: Sidecar) -> None:
    """A known path with the wrong method is a 405 problem document."""
    assert_problem(await sidecar.client.delete("/connectors"), 405, "method_not_allowed")


async def test_malformed_json_is_400_invalid_json(paired: Sidecar) -> None:
    """A body that is not JSON is 400 ``invalid_json``."""
    response = await paired.client.post(
        "/send", content=b'{"requestId": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")


@pytest.mark.parametrize(
    "path",
    [
        "/send",
        "/connector-sessions",
        "/connector-sessions/cs_unknown/cancel",
        "/connector-sessions/cs_unknown/verify-code",
        "/deliveries/replay",
        "/connections/conn_1/logout",
        "/sim/sessions/cs_unknown/scan",
        "/sim/connections/conn_1/messages",
        "/sim/connections/conn_1/faults",
    ],
)
@pytest.mark.parametrize(
    "content",
    [b'{"requestId": "\xff\xfe"}', b'{"a": "\xed\xa0\x80"}', b"\xc3"],
    ids=["invalid-byte", "encoded-surrogate", "truncated-sequence"],
)
async def test_invalid_utf8_is_400_invalid_json(paired: Sidecar, path: str, content: bytes) -> None:
    """A JSON body that is not UTF-8 is 400 ``invalid_json`` on every JSON route, never a 500."""
    response = await paired.client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400, "invalid_json")
    assert "UTF-8" in problem["detail"]


async def test_empty_body_is_400_invalid_json(sidecar: Sidecar) -> None:
    """A route that needs a body answers 400 ``invalid_json`` to an empty one."""
    response = await sidecar.client.post("/connector-sessions", content=b"")
    assert_problem(response, 400, "invalid_json")


async def test_validation_errors_name_the_field(paired: Sidecar) -> None:
    """A 422 ``validation_failed`` carries ``errors[].path`` naming the offending field."""
    body = send_body("out_1")
    del body["target"]["peerId"]
    problem = assert_problem(await paired.client.post("/send", json=body), 422, "validation_failed")
    assert problem["errors"] == [
        {"path": "$.target.peerId", "message": problem["errors"][0]["message"]}
    ]

    body = send_body("out_1")
    body["content"] = 42
    problem = assert_problem(await paired.client.post("/send", json=body), 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == ["$.content"]

    body = send_body("out_1")
    del body["requestId"]
    problem = assert_problem(await paired.client.post("/send", json=body), 422, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == ["$.requestId"]


@pytest.mark.parametrize(
    ("path", "field"), [("/send", "metadata"), ("/connector-sessions", "options")]
)
async def test_deeply_nested_json_is_400_not_500(paired: Sidecar, path: str, field: str) -> None:
    """JSON nested deeper than the decoder can follow is 400 ``invalid_json``, never a 500."""
    depth = 100_000
    body = send_body("out_deep") if path == "/send" else {"kind": "sim", "connectionId": "c"}
    body.pop(field, None)
    nested = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    content = json.dumps(body).encode()[:-1] + f', "{field}": '.encode() + nested + b"}"
    response = await paired.client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")


async def test_unknown_request_fields_are_ignored(paired: Sidecar) -> None:
    """Fields a newer host adds are ignored, never rejected (docs/CONTRACT.md §0)."""
    body = send_body("out_unknown", futureField={"x": 1})
    body["target"]["futureTargetField"] = True
    response = await paired.client.post("/send", json=body)
    assert response.status_code == 200, response.text


async def test_body_over_1_mib_is_413(sidecar: Sidecar) -> None:
    """A body over 1 MiB with an honest Content-Length is refused with 413 ``body_too_large``."""
    response = await sidecar.client.post(
        "/connector-sessions",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 413, "body_too_large")


async def test_body_over_1_mib_with_a_lying_content_length_is_413(sidecar: Sidecar) -> None:
    """A Content-Length that understates the body does not get it past the 1 MiB limit."""
    response = await sidecar.client.post(
        "/connector-sessions",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json", "Content-Length": "10"},
    )
    assert_problem(response, 413, "body_too_large")


async def test_streamed_body_over_1_mib_is_413(sidecar: Sidecar) -> None:
    """A chunked body with no Content-Length is cut off once it passes 1 MiB."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(40):  # 40 × 64 KiB = 2.5 MiB, far more than allowed
            sent += 1
            yield b" " * 65536

    response = await sidecar.client.post(
        "/connector-sessions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "body_too_large")
    assert "content-length" not in response.request.headers


async def test_body_of_exactly_1_mib_is_read(paired: Sidecar) -> None:
    """A body of exactly 1 MiB is within the limit (it fails validation, not the size check)."""
    body = b'{"x": "' + b"a" * (MAX_BODY_BYTES - 9) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = await paired.client.post(
        "/send", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation_failed")


async def test_non_numeric_content_length_is_400(sidecar: Sidecar) -> None:
    """A Content-Length that is not a number is a 400 problem, not a crash."""
    response = await sidecar.client.post(
        "/connector-sessions", content=b"{}", headers={"Content-Length": "ten"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
