"""Every route answers as ``GET /openapi.json`` documents it (schemathesis against the real app).

The app runs in process (ASGI, with its lifespan) on a fresh data directory with the sim
connector. Schemathesis generates requests for each documented operation, valid and invalid, and
checks each answer: no 5xx, a documented status, the documented content type and headers, a body
that matches the schema, invalid input refused with a 4xx. Bounded: a fixed number of examples
per operation, derandomized so every run sends the same requests.

Two differences are deliberate and kept out of the generated bodies: JSON Schema counts
``20.0`` as an integer, msgspec (and so the sidecar) reads it as a float and answers 422 naming
the field (the contract's integers are written without a fraction); and a ``date-time`` format
is only an annotation in OpenAPI 3.1, which the generator does not hold to, while the sidecar
refuses a ``from``/``to`` that is not an RFC 3339 time with a 422 naming it. Likewise an
attachment's source must be usable (base64 data, an http(s) URL, a ``med_`` id), which the
schema cannot say: the sidecar answers 422 naming it.
"""

from __future__ import annotations

import base64
import datetime
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from connector_contracts import build_openapi
from connector_sidecar import create_app

from .conftest import AUTH, make_settings

pytestmark = pytest.mark.timeout(600)

# 413 (a body over 1 MiB) is a refusal too; schemathesis's default list lacks it.
# /readyz is 503 by design here (no BRIDGE_URL): a documented answer, not a server error.
_CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 415, 422, 429]
            }
        },
        "operations": [
            {"include-path": "/readyz", "checks": {"not_a_server_error": {"enabled": False}}},
            # The coverage phase sends boundary values without the body filter below; on these
            # two its boundary bodies are exactly the documented differences (an empty time, a
            # source that is not usable). Their examples and fuzzing phases still run, filtered.
            {"include-path": "/send", "phases": {"coverage": {"enabled": False}}},
            {"include-path": "/deliveries/replay", "phases": {"coverage": {"enabled": False}}},
        ],
    }
)
# The app is built at import (nothing runs until its first request starts the lifespan, on
# schemathesis's ASGI transport); its data directory is made then and removed by ``app``.
_DATA_DIR = Path(tempfile.gettempdir()) / f"sidecar-openapi-{uuid.uuid4().hex}"
_APP = create_app(make_settings(_DATA_DIR))
schema = schemathesis.openapi.from_dict(build_openapi(), config=_CONFIG)
schema.app = _APP


def _has_whole_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_whole_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_whole_float(v) for v in value)
    return False


def _has_bad_time(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    for name in ("from", "to"):
        value = body.get(name)
        if isinstance(value, str):
            try:
                msgspec.json.decode(msgspec.json.encode(value), type=datetime.datetime)
            except msgspec.ValidationError:
                return True
    return False


def _has_unusable_source(body: Any) -> bool:
    """An attachment whose one source is not something the sidecar can fetch: not base64, not
    an http(s) URL, not a ``med_`` id. The schema says "exactly one source"; what makes a
    source usable is checked by the sidecar (422 naming it), not expressible in the schema."""
    if not isinstance(body, dict) or not isinstance(body.get("attachments"), list):
        return False
    for attachment in body["attachments"]:
        if not isinstance(attachment, dict):
            continue
        data, url, media_id = (attachment.get(k) for k in ("data", "url", "mediaId"))
        if isinstance(data, str):
            try:
                base64.b64decode(data, validate=True)
            except ValueError:
                return True
            if not data:
                return True
        if isinstance(url, str) and not url.lower().startswith(("http://", "https://")):
            return True
        if isinstance(media_id, str) and not media_id.startswith("med_"):
            return True
    return False


@schema.hook
def filter_body(context: Any, body: Any) -> bool:
    """Leave out bodies with an integer spelled as a float, a time that is not one, or an
    attachment source the sidecar cannot use (see the module docstring)."""
    return not (_has_whole_float(body) or _has_bad_time(body) or _has_unusable_source(body))


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    """The real app; its lifespan (started by the first request) is stopped at the end."""
    try:
        yield _APP
    finally:
        asgi.shutdown_lifespans()
        shutil.rmtree(_DATA_DIR, ignore_errors=True)


def test_the_app_serves_this_document(app: Any) -> None:
    """``GET /openapi.json`` is the document the cases below are generated from."""
    with asgi.get_client(app) as client:
        assert client.get("/openapi.json").json() == build_openapi()


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_route_answers_as_documented(app: Any, case: Any) -> None:
    """Generated requests to each documented operation get answers the document allows."""
    case.call_and_validate(headers=AUTH)
