"""Answers given before the request body is read close the connection, and say so.

Some answers come before a route reads the body, or instead of it: 401 from the bearer check,
404 and 405 from routing, 413 as soon as the body is too big. The rest of that body is still on
the wire. The server cannot read the next request of a keep-alive connection past it, so it
closes the connection (or waits on it). A pooled client that was not told would send its next
request on that connection and get "server disconnected" or a read timeout instead of an answer.

So every response that starts while the request body is not fully received carries
``Connection: close`` (RFC 9112 §9.6): the client opens a fresh connection for its next request.
Draining the body instead would make a refused client cost us its whole upload.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CloseWhenBodyUnread"]


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"0", b""):
            return True
    return False


class CloseWhenBodyUnread:
    """ASGI middleware: ``Connection: close`` on a response that starts before the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        body_read = False

        async def tracking_receive() -> Message:
            nonlocal body_read
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_read:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, tracking_receive, closing_send)
