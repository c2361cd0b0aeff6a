"""create_app: the FastAPI application around one served model, loaded in the background.

The server answers at once; /health says 503 until the model has loaded (and again if the
engine dies), so an orchestrator can wait for readiness without timeouts on start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fireside.api.errors import ErrorResponse, install_error_handlers
from fireside.api.headers import SecurityHeadersMiddleware
from fireside.api.hosts import LOOPBACK_HOSTS
from fireside.api.metrics import HttpMetricsMiddleware
from fireside.api.middleware import GuardMiddleware
from fireside.api.request_id import RequestIdMiddleware
from fireside.api.routes_lora import router as lora_router
from fireside.api.routes_openai import router as openai_router
from fireside.api.routes_tokenizer import router as tokenizer_router
from fireside.api.served import ServedModel
from fireside.api.state import AppState
from fireside.api.static import mount_web

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 << 20  # long prompts fit; a runaway upload does not


class AppExtension(Protocol):
    """Something more served by the same app (the chat application under /api): its routes,
    and what it opens at start-up and closes at shutdown. `api` knows no more of it."""

    def install(self, app: FastAPI) -> None: ...

    def lifespan(self, app: FastAPI) -> AbstractAsyncContextManager[None]: ...


def create_app(
    model_name: str,
    load: Callable[[], Awaitable[ServedModel]],
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    extensions: Sequence[AppExtension] = (),
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    load_dir: Callable[[Path], Awaitable[ServedModel]] | None = None,
) -> FastAPI:
    """`load` builds the engine (slow); it runs after the server is already listening.
    Requests whose Host is not one of `allowed_hosts` get a 400 (DNS rebinding). `load_dir`
    loads another model directory the same way (serving another model version)."""
    state = AppState(model_name, load, load_dir=load_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load_in_background() -> None:
            try:
                state.served = await load()
                log.info("serving %s", model_name)
            except Exception as e:
                log.exception("loading the model failed")
                state.load_error = str(e) or type(e).__name__

        task = asyncio.create_task(load_in_background())
        try:
            async with contextlib.AsyncExitStack() as stack:
                for extension in extensions:
                    await stack.enter_async_context(extension.lifespan(app))
                yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if state.served is not None and state.served.close is not None:
                await state.served.close()

    app = FastAPI(
        title="Fireside",
        summary="OpenAI-compatible API for a self-hosted language model",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.fireside = state
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=max_body_bytes, state=state)
    # Added after the guard, so it runs before it: a foreign Host learns nothing, not a 401.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False)
    app.add_middleware(SecurityHeadersMiddleware)  # every answer has them
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)  # refused ones counted too
    # Outermost: every line logged for a request, uvicorn's access line included, has its id.
    app.add_middleware(RequestIdMiddleware)
    app.include_router(openai_router)
    app.include_router(tokenizer_router)
    app.include_router(lora_router)
    for extension in extensions:
        extension.install(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    mount_web(app)  # last: it answers every GET the API routes above do not
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, saying 400 (OpenAI's envelope) where FastAPI would say 422."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            for code, text in ERROR_DOCS.items():
                responses.setdefault(
                    code,
                    {"description": text, "content": {"application/json": {"schema": error_ref}}},
                )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name, sub in schemas["ErrorResponse"].pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    app.openapi_schema = doc
    return doc


ERROR_DOCS = {
    "400": "Invalid request (OpenAI error envelope)",
    "401": "Missing or wrong API key, or not logged in",
    "403": "Not allowed (chat app: another site's origin, a closed sign-up, not an admin)",
    "404": "Unknown model or route",
    "405": "Method not allowed",
    "409": "Conflict (chat app: an existing account, an answer still being written)",
    "413": "Request body too large",
    "429": "Queue full; retry later",
    "500": "Internal error",
    "503": "Model loading or engine stopped",
}
