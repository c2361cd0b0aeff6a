"""Logging for `fireside serve` (and the worker): text or one JSON object per line
(FIRESIDE_LOG_FORMAT=json), each line carrying the id of the request it belongs to.

The request id lives in the ContextVar `request_id`: api/request_id.py's middleware sets it
from the client's X-Request-ID (when that is a sane token) or a new one, and answers it in the
same header. Tasks started while a request runs (its generation, say) copy the context, so
their lines carry the id too; the gateway hands it to a worker as gRPC metadata
`x-request-id`. This module imports no web stack, so the worker logs alike.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any, Literal

LogFormat = Literal["text", "json"]
request_id: ContextVar[str | None] = ContextVar("fireside_request_id", default=None)

HEADER = "X-Request-ID"
# What a client's id may look like: a UUID, a trace id, a proxy's token. Anything else (too
# long, spaces, control characters that would forge log lines) is replaced by a fresh id.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=\-]{0,127}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# JSON keys: the record's attributes renamed to short names; extra attributes follow.
JSON_FIELDS = {"levelname": "level", "name": "logger", "message": "msg"}


def sane_request_id(given: str | None) -> str | None:
    return given if given is not None and _SANE_ID.fullmatch(given) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record; outside a request, `missing` (None:
    JSON's null; "-" in text)."""

    def __init__(self, missing: str | None = None) -> None:
        super().__init__()
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.request_id = rid if rid is not None else self.missing
        return True


class AccessFields(logging.Filter):
    """uvicorn's access line as fields (method, path, status, client) for JSON logs, beside
    the text message; runs after the share-token redaction (a logger filter), so the path
    is the redacted one."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            record.client, record.method, record.path, _version, record.status = args
        return True


def log_config(fmt: LogFormat = "text", level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig document for the whole process: uvicorn's loggers (give
    it as uvicorn.run's log_config) and Fireside's, through one handler on stderr."""
    formatter: dict[str, Any]
    if fmt == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS

        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": JSON_FIELDS,
            "timestamp": "ts",  # ISO 8601 in UTC, microseconds included
            # uvicorn's ANSI-coloured copy of the message says nothing more.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message", "taskName"],
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter, "missing": None if fmt == "json" else "-"},
            "access_fields": {"()": AccessFields},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request_id", "access_fields"],
            }
        },
        # uvicorn's own loggers pass their records up to the root's one handler.
        "loggers": {
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "propagate": True},
            "uvicorn.access": {"level": level, "handlers": [], "propagate": True},
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def configure(fmt: LogFormat = "text", level: str = "INFO") -> None:
    """Logging set up for this process: the worker's, and the server's until uvicorn applies
    the same document again (uvicorn_options passes it)."""
    import logging.config

    logging.config.dictConfig(log_config(fmt, level))
