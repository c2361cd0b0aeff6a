"""The database URL people paste, mapped to the async driver Fireside runs on.

`postgresql://user:pass@host/db?sslmode=require` is what PostgreSQL's own tools, Heroku, RDS and
Helm charts hand out; SQLAlchemy reads a bare `postgresql://` as psycopg2 (or `+psycopg`), neither
of which is installed or async. Every PostgreSQL spelling becomes asyncpg, and libpq's `sslmode`
becomes asyncpg's `ssl` (same values: disable, allow, prefer, require, verify-ca, verify-full).
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fireside.errors import FiresideError

POSTGRES_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "postgresql+psycopg2",
        "postgresql+psycopg2cffi",
        "postgresql+pg8000",
    }
)
SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"})


def async_database_url(url: str | URL) -> URL:
    """The URL with the driver Fireside uses; an unknown scheme is a one-line error."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise FiresideError(
            f"database URL {_hidden(str(url))!r} is not a URL: give e.g. "
            "postgresql://user:password@host/db or sqlite:///path/fireside.db"
        ) from None
    scheme = parsed.drivername
    if scheme in SQLITE_SCHEMES:
        return parsed.set(drivername="sqlite+aiosqlite")
    if scheme in POSTGRES_SCHEMES:
        query = dict(parsed.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise FiresideError(
        f"database URL scheme {scheme!r} is not supported: use postgresql:// (or postgres://) "
        "or sqlite:///"
    )


def _hidden(url: str) -> str:
    """The URL without its password, for an error message."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    return f"{scheme}{sep}{userinfo.split(':')[0]}:***@{tail}"
