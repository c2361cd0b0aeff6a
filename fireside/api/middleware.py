"""ASGI middleware that answers before any route runs: API key (401) and body size (413).

The key found names the caller (api.state.Caller, in scope["state"]): the prefix cache is
salted by it, and /metrics, whenever a key is required, takes an administrator's key only.

Both must win over body validation (a wrong key with a malformed body is still a 401), so
they cannot be route dependencies, which FastAPI resolves together with the body.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fireside.api.errors import APIError, error_response
from fireside.api.state import SERVER_KEY, AppState, Caller
from fireside.api.static import is_page_path

# Paths anyone may read: liveness probes, the API's own documentation. Not /metrics: its
# counters (cached prompt tokens above all) tell about other callers' requests.
OPEN_PATHS = frozenset(
    {"/health", "/livez", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
)
ADMIN_PATHS = frozenset({"/metrics"})
# The chat application authenticates its own callers (session cookies, personal keys), at
# /api/... and at its GraphQL endpoint.
OWN_AUTH_PREFIX = "/api/"
OWN_AUTH_PATHS = frozenset({"/graphql"})


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        state: AppState | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = await self._check_key(scope)
        if error is None:
            body, error = await self._read_body(scope, receive)
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            # The body once, then the real channel (so a disconnect is still seen).
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _check_key(self, scope: Scope) -> APIError | None:
        required = self.api_key is not None or (self.state is not None and self.state.require_key)
        path = scope["path"]
        if path in OPEN_PATHS or path in OWN_AUTH_PATHS or path.startswith(OWN_AUTH_PREFIX):
            return None
        if is_page_path(path):  # the web page: public, it signs people in
            return None
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        token = token.strip()
        found = await self._caller(token) if scheme.lower() == "bearer" and token else None
        if found is not None:
            # On an open server too: a valid key keeps its owner's prefix cache their own.
            scope.setdefault("state", {})["fireside_caller"] = found
        if not required:
            return None
        if found is None:
            problem = "no API key was given" if not given else "the API key is not valid"
            return APIError(
                f"{problem}: send it as 'Authorization: Bearer <key>'",
                401,
                type="authentication_error",
                code="invalid_api_key",
            )
        if path in ADMIN_PATHS and not found.admin:
            return APIError(
                "this needs the server's API key or an administrator's key",
                403,
                type="permission_error",
                code="forbidden",
            )
        return None

    async def _caller(self, token: str) -> Caller | None:
        if self.api_key is not None and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return SERVER_KEY
        for check in self.state.key_checks if self.state is not None else []:
            found = await check(token)
            if found is not None:
                return found
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, APIError | None]:
        limit = self.max_body_bytes
        if self.state is not None:
            limit = self.state.body_limits.get(scope["path"], limit)
        too_big = APIError(
            f"the request body is larger than the limit of {limit} bytes",
            413,
            code="request_too_large",
        )
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return b"", too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None
