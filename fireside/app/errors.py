"""The chat app's errors, in the same envelope as the OpenAI routes'."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from fireside.api.errors import APIError, error_response
from fireside.store.db import is_busy

log = logging.getLogger(__name__)


def not_found(what: str) -> APIError:
    # The same answer whether the thing is missing or someone else's: ids reveal nothing.
    return APIError(f"no such {what}", 404, type="not_found_error", code="not_found")


def unauthorized(message: str = "log in first") -> APIError:
    return APIError(message, 401, type="authentication_error", code="unauthorized")


def forbidden(message: str) -> APIError:
    return APIError(message, 403, type="permission_error", code="forbidden")


def conflict(message: str) -> APIError:
    return APIError(message, 409, type="conflict_error", code="conflict")


def too_many(message: str) -> APIError:
    return APIError(message, 429, type="rate_limit_error", code="rate_limit_exceeded")


def busy(message: str = "the database is busy; retry in a moment") -> APIError:
    # error_response adds Retry-After to every 503.
    return APIError(message, 503, type="service_unavailable", code="database_busy")


async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """A busy database (SQLite's lock or the pool ran out of time) is a 503 with Retry-After:
    the request may be sent again. Any other database failure stays a logged 500."""
    if is_busy(exc):
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
        return error_response(busy())
    log.exception("database error on %s %s", request.method, request.url.path)
    return error_response(
        APIError("internal server error", 500, type="internal_error", code="internal_error")
    )


def install_database_errors(app: FastAPI) -> None:
    for kind in (OperationalError, SQLAlchemyTimeoutError):
        app.add_exception_handler(kind, on_database_error)
