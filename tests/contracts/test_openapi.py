"""The OpenAPI document generated from the contract types."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate

from connector_contracts import build_openapi
from connector_contracts.openapi import ROUTES


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def test_document_is_valid_openapi_31() -> None:
    """``build_openapi()`` validates as OpenAPI 3.1 and survives a JSON round trip."""
    document = build_openapi(server_url="http://127.0.0.1:8787")
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "http://127.0.0.1:8787"}]
    assert json.loads(json.dumps(document)) == document


def test_every_reference_resolves() -> None:
    """Every ``$ref`` points at a component schema that exists."""
    document = build_openapi()
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert {"BridgeEvent", "HostAnswer", "Problem", "SendRequest", "SendResult"} <= set(schemas)


def test_every_contract_route_is_documented() -> None:
    """Each route of the contract appears with its success status and its error statuses."""
    paths = build_openapi()["paths"]
    expected = {
        ("get", "/connectors"): {"200", "401"},
        ("post", "/connector-sessions"): {"200", "201", "400", "401", "404", "409", "413", "422"},
        ("get", "/connector-sessions/{sessionId}"): {"200", "401", "404"},
        ("post", "/connector-sessions/{sessionId}/cancel"): {"200", "404"},
        ("post", "/connector-sessions/{sessionId}/verify-code"): {"200", "404", "409"},
        ("get", "/connections"): {"200"},
        ("get", "/connections/{connectionId}"): {"200", "404"},
        ("post", "/connections/{connectionId}/logout"): {"200"},
        ("post", "/send"): {"200", "202", "404", "409", "410", "422", "502", "503"},
        ("get", "/send/{requestId}"): {"200", "404"},
        ("get", "/deliveries"): {"200", "422"},
        ("get", "/healthz"): {"200"},
        ("get", "/readyz"): {"200", "503"},
        ("post", "/sim/connections/{connectionId}/messages"): {"202", "404"},
        ("post", "/sim/connections/{connectionId}/faults"): {"200", "422"},
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (method, path, sorted(responses))
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)


def test_errors_are_problem_documents_and_public_routes_need_no_token() -> None:
    """Error responses are ``application/problem+json`` Problems; only public routes drop the bearer."""
    document = build_openapi()
    assert document["security"] == [{"bearer": []}]
    public = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == []:
                public.add((method, path))
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"]
                    schema = response["content"]["application/problem+json"]["schema"]
                    problem = "ReadinessProblem" if path == "/readyz" else "Problem"
                    assert schema == {"$ref": f"#/components/schemas/{problem}"}
    assert {p for _, p in public} == {"/healthz", "/readyz", "/webhooks/feishu/{connectionId}"}
    assert len(
        {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    ) == len(ROUTES)


def test_schemas_use_camel_case_names() -> None:
    """Component schemas carry the wire's camelCase names (the core fields of docs/CONTRACT.md §4, §5)."""
    schemas = build_openapi()["components"]["schemas"]
    assert {"requestId", "connectionId", "target", "content"} <= set(
        schemas["SendRequest"]["properties"]
    )
    assert set(schemas["SendRequest"]["required"]) == {
        "requestId",
        "connectionId",
        "target",
        "content",
    }
    assert {"eventId", "deliveryAttempt", "peerId", "messageId"} <= set(
        schemas["BridgeEvent"]["properties"]
    )


def test_send_status_pending_is_documented_as_an_addition() -> None:
    """``pending`` is documented on SendResult and on ``GET /send/{requestId}`` as an addition."""
    document = build_openapi()
    status = document["components"]["schemas"]["SendResult"]["properties"]["status"]
    assert "pending (an addition)" in status["description"]
    operation = document["paths"]["/send/{requestId}"]["get"]
    assert "pending, an addition" in operation["description"]
    assert "providerMessageId stays null" in operation["description"]


def test_readyz_503_is_a_problem_document_with_reasons() -> None:
    """``/readyz``'s 503 is a Problem that also carries ``ok`` and ``reasons``."""
    schemas = build_openapi()["components"]["schemas"]
    readiness = schemas["ReadinessProblem"]["properties"]
    assert set(schemas["Problem"]["properties"]) | {"ok", "reasons"} == set(readiness)


def test_retry_after_is_documented_where_the_server_sends_it() -> None:
    """``POST /send``'s 409 and 503 and the Feishu webhook's 503 document ``Retry-After``."""
    paths = build_openapi()["paths"]
    with_header = {
        (path, method, status)
        for path, operations in paths.items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if "Retry-After" in response.get("headers", {})
    }
    assert with_header == {
        ("/send", "post", "409"),
        ("/send", "post", "503"),
        ("/webhooks/feishu/{connectionId}", "post", "503"),
    }


def test_query_parameters_have_their_types_and_bounds() -> None:
    """``GET /deliveries`` documents status's enum, limit's bounds and the cursor's shape."""
    parameters = {
        p["name"]: p["schema"] for p in build_openapi()["paths"]["/deliveries"]["get"]["parameters"]
    }
    assert parameters["status"]["enum"] == ["pending", "delivered", "dead"]
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
    assert parameters["cursor"]["pattern"] == "^s[0-9]{1,18}$"


def test_optional_bodies_are_not_required() -> None:
    """Routes that accept no body at all (bulk replay, logout, cancel, sim scan) say so."""
    paths = build_openapi()["paths"]
    for path in (
        "/deliveries/replay",
        "/connections/{connectionId}/logout",
        "/connector-sessions/{sessionId}/cancel",
        "/sim/sessions/{sessionId}/scan",
    ):
        assert paths[path]["post"]["requestBody"]["required"] is False, path


def test_operator_routes_are_documented() -> None:
    """The v1.1 operator routes appear with their success and error statuses."""
    paths = build_openapi()["paths"]
    expected = {
        ("delete", "/connections/{connectionId}"): {"200", "401", "404"},
        ("post", "/connections/{connectionId}/pause"): {"200", "404", "409"},
        ("post", "/connections/{connectionId}/resume"): {"200", "404", "409"},
        ("post", "/bridge/pause"): {"200", "401"},
        ("post", "/bridge/resume"): {"200", "401"},
        ("post", "/bridge/test"): {"200", "409"},
        ("get", "/deliveries/{eventId}/attempts"): {"200", "404"},
    }
    for (method, path), statuses in expected.items():
        assert statuses <= set(paths[path][method]["responses"]), (method, path)


def test_the_bridge_post_is_described_under_webhooks() -> None:
    """``webhooks`` describes the bridge POST with every event type, told apart by ``type``."""
    document = build_openapi()
    post = document["webhooks"]["bridgeEvent"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    mapping = body["discriminator"]["mapping"]
    assert set(mapping) == {"message", "connection.status", "send.status", "ping"}
    schemas = document["components"]["schemas"]
    for name, ref in mapping.items():
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert schema["properties"]["type"]["enum"] == [name]
        assert {"eventId", "timestamp"} <= set(schema["properties"])
    assert {"previousStatus", "lastError"} <= set(schemas["ConnectionStatusEvent"]["properties"])
    assert "providerMessageIds" in schemas["SendStatusEvent"]["properties"]
    assert {"200", "409"} <= set(post["responses"])
    assert {h["name"] for h in post["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
