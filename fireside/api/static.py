"""The web UI's built assets at `/`, from the package (`fireside/web_dist`, built by `make web`).

Vite names every asset by its content hash, so those are cached for a year as immutable (a
CDN can keep them); `index.html` names the current hashes and is never cached. Any other GET
that is not an API path answers index.html, so the page's own routes (/c/ID, /settings)
survive a reload; API paths never fall back, so a wrong API URL is still a JSON 404.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

WEB_DIST = Path(__file__).resolve().parent.parent / "web_dist"

# Prefixes the server's own routes own; the page never takes them over.
API_PREFIXES = frozenset(
    {"api", "graphql", "v1", "openapi.json", "docs", "redoc"}
    | {"health", "livez", "readyz", "metrics"}
    | {"tokenize", "detokenize", "tokenizer_info"}
)

# The page itself and its client routes (web/src/lib/router.svelte.ts): public, like any
# login page, so an API key never locks people out of the page that signs them in.
PAGE_PREFIXES = frozenset({"", "assets", "c", "login", "signup", "settings", "admin", "share"})

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"


def is_api_path(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return first in API_PREFIXES


def is_page_path(path: str) -> bool:
    return path.lstrip("/").split("/", 1)[0] in PAGE_PREFIXES


def mount_web(app: FastAPI, root: Path = WEB_DIST) -> None:
    """Serve the built UI; call after every API router is included (this route catches the rest)."""
    root = root.resolve()
    index = root / "index.html"
    if not index.is_file():
        log.info("no web UI at %s (run `make web`); serving the API only", root)
        return

    @app.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def web(path: str, request: Request) -> Response:
        if is_api_path(path):
            raise HTTPException(404)
        if path.startswith("assets/"):
            file = (root / path).resolve()
            if not file.is_relative_to(root / "assets") or not file.is_file():
                raise HTTPException(404, f"no asset {path!r}")
            return FileResponse(file, headers={"Cache-Control": IMMUTABLE})
        return FileResponse(index, headers={"Cache-Control": NO_CACHE})
