"""Share-link tokens kept out of the access log: uvicorn logs every request's path, and the
paths /share/<token> (the page) and /api/share/<token> (read, revoke) carry the token, which
opens the conversation to whoever reads the log."""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
SHARE_TOKEN = re.compile(r"(/share/)[^/?#\s\"]+")


def redact(path: str) -> str:
    return SHARE_TOKEN.sub(r"\1[redacted]", path)


class RedactShareTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: args = (client, method, path, http_version, status).
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Once per process (several apps may start in one, as in tests)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactShareTokens) for f in logger.filters):
        logger.addFilter(RedactShareTokens())
