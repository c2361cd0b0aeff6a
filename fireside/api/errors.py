"""OpenAI's error envelope, and the handlers that put every failure into it.

Clients (the `openai` SDK, LangChain, lm-eval) read `error.message`; status codes follow
OpenAI: 400 bad value, 401 key, 404 model/route, 413 body, 429 queue full, 503 not ready.
FastAPI's own 422 for schema violations is turned into a 400 here, as OpenAI answers.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from fireside.engine.types import (
    EngineDeadError,
    EngineOverloadedError,
    PromptTooLongError,
    WorkerLostError,
)

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class APIError(Exception):
    """An error the client caused (or must wait out), answered in OpenAI's envelope."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for a 429's Retry-After header
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, object]:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(message, 400, param=param)


def not_ready(message: str) -> APIError:
    return APIError(message, 503, type="service_unavailable", code="service_unavailable")


def from_engine_error(e: Exception) -> APIError:
    """The engine's contract errors, as HTTP."""
    if isinstance(e, PromptTooLongError):
        return APIError(str(e), 400, param="messages", code="context_length_exceeded")
    if isinstance(e, EngineOverloadedError):
        return APIError(str(e) or "the server is busy; retry later", 429, type="rate_limit_error")
    if isinstance(e, WorkerLostError):  # mid-answer: what was streamed stands, the rest is lost
        return APIError(str(e), 503, type="service_unavailable", code="worker_lost")
    if isinstance(e, EngineDeadError):
        return not_ready(str(e) or "the inference engine stopped")
    if isinstance(e, ValueError):  # InvalidRequestError and other refusals of the request
        return bad_request(str(e))
    log.error("unexpected engine error: %r", e)
    return APIError("the engine failed; see the server log", 500, type="internal_error")


def error_response(error: APIError) -> JSONResponse:
    wait = math.ceil(error.retry_after) if error.retry_after is not None else 1
    headers = {"Retry-After": str(max(wait, 1))} if error.status in (429, 503) else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _describe(errors: list[dict[str, object]]) -> tuple[str, str | None]:
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]  # type: ignore[attr-defined]
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    return f"{where}{first.get('msg', 'invalid value')}", param


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = _describe(list(exc.errors()))
    return error_response(bad_request(message, param))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    return error_response(APIError(message, exc.status_code, type=kind or "invalid_request_error"))


async def _on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(from_engine_error(exc))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = APIError("internal server error", 500, type="internal_error", code="internal_error")
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for kind in (PromptTooLongError, EngineOverloadedError, EngineDeadError):
        app.add_exception_handler(kind, _on_engine_error)
    app.add_exception_handler(Exception, _on_unexpected)
