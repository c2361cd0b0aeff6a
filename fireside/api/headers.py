"""Security headers on every response: a strict Content-Security-Policy and friends.

The built page has no inline script and loads nothing from elsewhere, so scripts, styles,
fonts and connections are 'self' alone. Style *attributes* are allowed: KaTeX sizes its
glyphs with them, and an attribute cannot run script. The page cannot be framed (clickjacking)
and nothing is sniffed into a script. FastAPI's /docs (Swagger UI from a CDN, an inline
script) and GraphiQL at /graphql get the framing and base rules only.

An HTML preview (GET /api/previews/{id}, fireside/app/runs.py) is the one answer the page may
frame, and the one whose inline scripts run: sandboxed into an opaque origin (no cookies, no
storage, no same-origin requests to the API) and allowed to load and connect to nothing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",  # ws: and wss: to the same host too (CSP 3)
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-src 'self'",  # HTML previews (default-src says so too; this says it is meant)
        "frame-ancestors 'none'",
    ]
)
DOCS_CSP = "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
# /graphql: GraphiQL in development mode (fireside/app/graphql), from a CDN as Swagger UI is.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/graphql"})
PREVIEW_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'unsafe-inline'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "font-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "sandbox allow-scripts",  # opaque origin even when opened outside its frame
    ]
)
PREVIEW_PREFIX = "/api/previews/"


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    if path.startswith(PREVIEW_PREFIX):
        csp, framing = PREVIEW_CSP, b"SAMEORIGIN"
    else:
        csp, framing = (DOCS_CSP if path in DOCS_PATHS else PAGE_CSP), b"DENY"
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", framing),
    ]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
