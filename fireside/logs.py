"""Logging context shared across layers (helper W2 owns the rest of this module)."""

from __future__ import annotations

from contextvars import ContextVar

# The request being served (X-Request-ID); a gateway sends it to workers as `x-request-id`.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
