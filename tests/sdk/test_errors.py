"""The error tree: one base, documented shape, useful ``str()``, class chosen by code and status."""

from __future__ import annotations

import inspect
import re

import pytest

import connector_sdk
from connector_sdk import errors
from connector_sdk.errors import (
    BridgeTimestampOutOfTolerance,
    ConfigurationError,
    ConnectionNotReady,
    ConnectorSDKError,
    InvalidBridgeEvent,
    ProviderRejected,
    ProviderUnavailable,
    RequestIdConflict,
    ServerError,
    SidecarHTTPError,
    SidecarUnavailable,
    UnknownDedupeKey,
    ValidationFailed,
    error_class_for,
)


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for _, value in inspect.getmembers(errors, inspect.isclass)
        if issubclass(value, BaseException) and value.__module__ == errors.__name__
    ]


def test_every_error_has_the_one_base() -> None:
    """Every exception class in errors.py inherits from ConnectorSDKError."""
    classes = _error_classes()
    assert len(classes) > 25
    assert all(issubclass(cls, ConnectorSDKError) for cls in classes)


def test_every_error_is_drawn_in_the_docstring_and_exported() -> None:
    """The docstring's tree names every error class, and the package exports each one."""
    doc = errors.__doc__ or ""
    for cls in _error_classes():
        # A tree line: indentation, branch characters, then the class name as a whole word.
        assert re.search(rf"^[\s│├└─]*{cls.__name__}\b", doc, flags=re.MULTILINE), cls
        assert getattr(connector_sdk, cls.__name__) is cls


def test_configuration_error_is_a_value_error() -> None:
    """Bad constructor arguments raise an SDK error that is also a ValueError."""
    with pytest.raises(ConfigurationError) as caught:
        connector_sdk.SidecarClient(token="")
    assert isinstance(caught.value, ValueError)


def test_http_error_str_names_status_code_detail_and_request() -> None:
    """``str()`` gives status, code, detail, the call and the requestId."""
    error = RequestIdConflict(
        status=422,
        code="request_id_conflict",
        detail="different payload",
        method="POST",
        url="http://s/send",
        request_id="out_1",
        attempts=3,
    )
    assert str(error) == (
        "422 request_id_conflict: different payload "
        "(POST http://s/send, requestId=out_1, after 3 attempts)"
    )


def test_unavailable_str() -> None:
    """A transport failure says what happened and to which request."""
    error = SidecarUnavailable("no answer", request_id="r", attempts=2)
    assert str(error) == "no answer (requestId=r, after 2 attempts)"


def test_every_sidecar_error_has_status_code_detail_and_request_id() -> None:
    """Errors without an HTTP answer still carry status (None), code, detail and requestId."""
    error = SidecarUnavailable("no answer: ConnectError", request_id="r", attempts=2)
    assert (error.status, error.code, error.detail, error.request_id) == (
        None,
        "sidecar_unavailable",
        "no answer: ConnectError",
        "r",
    )
    http = ServerError(status=500, code="server_error", detail=None, title="Internal")
    assert (http.status, http.code, http.detail) == (500, "server_error", None)
    assert str(http) == "500 server_error: Internal"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (502, "provider_rejected", ProviderRejected),
        (503, "provider_rejected", ServerError),
        (503, "provider_unavailable", ProviderUnavailable),
        (504, None, ServerError),
        (409, "connection_not_ready", ConnectionNotReady),
        (422, "request_id_conflict", RequestIdConflict),
        (422, "something_new", ValidationFailed),
        (418, "teapot", SidecarHTTPError),
    ],
)
def test_error_class_for(status: int, code: str | None, expected: type[SidecarHTTPError]) -> None:
    """The class follows the code when the status agrees, else the status alone."""
    assert error_class_for(status, code) is expected


def test_bridge_errors_carry_status_and_code() -> None:
    """Bridge errors know the status and problem code the endpoint answers with."""
    stale = BridgeTimestampOutOfTolerance("too old", event_id="evt_1")
    assert (stale.status, stale.code) == (401, "unauthorized")
    assert str(stale) == "401 unauthorized: too old (eventId=evt_1)"
    assert (InvalidBridgeEvent("x", status=400).code, InvalidBridgeEvent("x").code) == (
        "invalid_json",
        "validation_failed",
    )


def test_unknown_dedupe_key_is_a_key_error_with_a_readable_str() -> None:
    """UnknownDedupeKey is a KeyError whose ``str()`` is a sentence, not a quoted key."""
    error = UnknownDedupeKey("c:e")
    assert isinstance(error, KeyError)
    assert str(error) == "no dedupe record for 'c:e'"
