"""The pairing console (``GET /console``) and the API reference (``GET /docs``): static pages.

Both are public because they hold no data: everything the console shows comes from the API
with the bearer token the operator types into it (kept in ``sessionStorage``, never a cookie),
and ``/docs`` renders the public ``/openapi.json``. The files ship inside the package
(``connector_sidecar/console/``): no build step, no CDN, they work offline. A strict
Content-Security-Policy allows only the sidecar's own scripts and styles and ``data:`` images
(the QR codes).
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_sidecar.problems import ApiProblem

__all__ = ["ASSETS", "is_public", "routes"]

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_public(path: str) -> bool:
    return path in ("/console", "/docs") or path.startswith("/console/")


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("connector_sidecar").joinpath("console", name).read_bytes()


def _page(name: str, media_type: str) -> Response:
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


async def console(request: Request) -> Response:
    return _page("index.html", "text/html; charset=utf-8")


async def docs(request: Request) -> Response:
    return _page("docs.html", "text/html; charset=utf-8")


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiProblem(404, "not_found", f"no console file {name!r}")
    return _page(name, media_type)


routes = [
    Route("/console", console, methods=["GET"]),
    Route("/console/{name}", asset, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
