"""X-Request-ID in and out: the client's id when sane (fireside.logs.sane_request_id), else a
new one, kept in fireside.logs.request_id while the request (or WebSocket) runs."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fireside.logs import HEADER, new_request_id, request_id, sane_request_id


class RequestIdMiddleware:
    """X-Request-ID in and out: the client's when sane, else a new one, in `request_id` for
    the request's lifetime (and in its WebSocket's). Outermost, so every other middleware's
    and uvicorn's access line see it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = sane_request_id(value.decode("latin-1"))
                break
        rid = given or new_request_id()
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
