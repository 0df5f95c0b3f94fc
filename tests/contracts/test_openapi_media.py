"""The OpenAPI document names the media additions of v1.1: GET /media/{mediaId} (bytes),
POST /typing, attachments on /send, and the descriptor type."""

from __future__ import annotations

from connector_contracts import build_openapi


def test_media_and_typing_routes_are_documented() -> None:
    """GET /media answers octet-stream bytes with 404/413/502/503; /typing takes TypingRequest."""
    document = build_openapi()
    media = document["paths"]["/media/{mediaId}"]["get"]
    assert media["responses"]["200"]["content"]["application/octet-stream"]["schema"] == {
        "type": "string",
        "format": "binary",
    }
    assert {"401", "404", "413", "502", "503"} <= set(media["responses"])
    typing = document["paths"]["/typing"]["post"]
    assert typing["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TypingRequest"
    }
    schemas = document["components"]["schemas"]
    assert "attachments" in schemas["SendRequest"]["properties"]
    assert set(schemas["Attachment"]["properties"]) == {
        "kind",
        "data",
        "url",
        "mediaId",
        "fileName",
        "mimeType",
    }
    assert {"mediaId", "kind", "mimeType", "fileName", "size", "url"} <= set(
        schemas["MediaDescriptor"]["properties"]
    )
    assert "413" in document["paths"]["/send"]["post"]["responses"]
