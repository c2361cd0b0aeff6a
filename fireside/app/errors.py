"""The chat app's errors, in the same envelope as the OpenAI routes'."""

from __future__ import annotations

from fireside.api.errors import APIError


def not_found(what: str) -> APIError:
    # The same answer whether the thing is missing or someone else's: ids reveal nothing.
    return APIError(f"no such {what}", 404, type="not_found_error", code="not_found")


def unauthorized(message: str = "log in first") -> APIError:
    return APIError(message, 401, type="authentication_error", code="unauthorized")


def forbidden(message: str) -> APIError:
    return APIError(message, 403, type="permission_error", code="forbidden")


def conflict(message: str) -> APIError:
    return APIError(message, 409, type="conflict_error", code="conflict")
