"""RFC 9457 problem documents: the one way the API reports an error (docs/CONTRACT.md §0)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from connector_contracts import Problem, ProblemError, decode, encode

T = TypeVar("T")

__all__ = [
    "MAX_BODY_BYTES",
    "ApiProblem",
    "field_problem",
    "problem_response",
    "read_body",
    "read_json",
    "validation_problem",
]

MAX_BODY_BYTES = 1024 * 1024


class ApiProblem(Exception):
    """Raised anywhere under a route; rendered as ``application/problem+json``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str | None = None,
        *,
        title: str | None = None,
        errors: list[ProblemError] | None = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.headers = dict(headers or {})
        self.request_id = request_id

    def to_problem(self) -> Problem:
        return Problem(
            title=self.title,
            status=self.status,
            code=self.code,
            detail=self.detail,
            errors=self.errors,
            request_id=self.request_id,
        )


def problem_response(problem: ApiProblem) -> Response:
    return Response(
        encode(problem.to_problem()),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=problem.headers,
    )


_AT_PATH = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def validation_problem(exc: msgspec.ValidationError, *, root: str = "$") -> ApiProblem:
    """A 422 naming the field msgspec complained about, as a JSON path into the request."""
    message = str(exc)
    path = root
    match = _AT_PATH.search(message)
    if match:
        path = root + match.group(1)[1:]
        message = message[: match.start()]
    missing = _MISSING.search(message)
    if missing:
        path = f"{path}.{missing.group(1)}"
    return field_problem(path, message)


def field_problem(path: str, message: str) -> ApiProblem:
    """A 422 ``validation_failed`` about one field, named by its JSON path."""
    return ApiProblem(
        422,
        "validation_failed",
        f"{path}: {message}",
        errors=[ProblemError(path=path, message=message)],
    )


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing more than ``limit`` (1 MiB) without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise ApiProblem(400, "invalid_request", "Content-Length is not a number") from None
        if too_big:
            raise _body_too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _body_too_large(limit)
    return bytes(body)


def _body_too_large(limit: int = MAX_BODY_BYTES) -> ApiProblem:
    return ApiProblem(413, "body_too_large", f"request bodies are limited to {limit} bytes")


async def read_json(
    request: Request,
    type_: type[T],
    *,
    empty_ok: bool = False,
    vendor_text: bool = False,
    limit: int = MAX_BODY_BYTES,
) -> T:
    """Decode the body as ``type_``: 400 for malformed JSON (or not UTF-8), 422 naming the field
    otherwise. ``limit``: the largest body accepted (413 beyond).

    ``vendor_text``: for a route that plays a vendor (the sim), read JSON as the vendors' JSON
    parsers do, which keep a lone UTF-16 surrogate escape (``"\\ud800"``) that msgspec refuses;
    the driver boundary then repairs it (``_text``). Other routes refuse it: 400.
    """
    body = await read_body(request, limit=limit)
    if not body.strip():
        if empty_ok:
            body = b"{}"
        else:
            raise ApiProblem(400, "invalid_json", "the request needs a JSON body")
    try:
        # JSON is UTF-8 (RFC 8259). msgspec checks only the strings it keeps, and reports bad
        # bytes with Python's UnicodeDecodeError, not a DecodeError: check the whole body first.
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiProblem(
            400, "invalid_json", f"the body is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        return decode(body, type_)
    except msgspec.ValidationError as exc:
        raise validation_problem(exc) from None
    except msgspec.DecodeError as exc:
        if vendor_text:
            return _decode_like_a_vendor(body, type_, exc)
        raise ApiProblem(400, "invalid_json", f"malformed JSON: {exc}") from None
    except RecursionError:
        # msgspec follows nesting with the C stack; 1 MiB of "[" goes deeper than it may.
        raise ApiProblem(400, "invalid_json", "malformed JSON: nested too deeply") from None


def _decode_like_a_vendor(body: bytes, type_: type[T], error: msgspec.DecodeError) -> T:
    """Python's JSON parser, then msgspec's validation: what msgspec refused only for a lone
    surrogate escape is read; anything else malformed is still a 400 (msgspec's own message)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiProblem(400, "invalid_json", f"malformed JSON: {error}") from None
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise validation_problem(exc) from None
