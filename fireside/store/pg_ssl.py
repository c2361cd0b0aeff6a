"""libpq's TLS settings in a PostgreSQL URL (`?sslmode=verify-full&sslrootcert=ca.pem`), as
people paste them, turned into what asyncpg takes: an `ssl` argument (an SSLContext, or the
mode's name where asyncpg does the same as libpq).

asyncpg reads `sslmode` only from a DSN of its own, and SQLAlchemy hands it the URL's query
as keyword arguments, where `sslmode` and `sslrootcert` are unknown: so they are taken out of
the URL here and given as `connect_args`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from fireside.errors import FiresideError

# libpq's names; `ssl` is asyncpg's (and SQLAlchemy's documented) spelling of `sslmode`.
TLS_PARAMS = ("sslmode", "ssl", "sslrootcert", "sslcert", "sslkey", "sslpassword")
MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def asyncpg_ssl(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL without libpq's TLS parameters, and asyncpg's connect arguments for them
    (empty: asyncpg's default, "prefer")."""
    query = {k: v for k, v in url.query.items() if k in TLS_PARAMS}
    if not query:
        return url, {}
    rest = url.difference_update_query(TLS_PARAMS)
    one = {k: v if isinstance(v, str) else v[-1] for k, v in query.items()}
    mode = one.get("sslmode", one.get("ssl", "prefer")).lower()
    if mode in ("true", "on", "1"):
        mode = "require"
    if mode not in MODES:
        raise FiresideError(f"the database URL's sslmode={mode!r} is not one of {', '.join(MODES)}")
    root, cert, key = one.get("sslrootcert"), one.get("sslcert"), one.get("sslkey")
    if mode == "require" and root:
        mode = "verify-ca"  # as libpq: a root certificate given makes "require" verify it
    if mode in ("disable", "allow", "prefer") or (mode == "require" and not cert):
        return rest, {"ssl": False if mode == "disable" else mode}
    context = _context(mode, root, cert, key, one.get("sslpassword"))
    return rest, {"ssl": context}


def _context(
    mode: str, root: str | None, cert: str | None, key: str | None, password: str | None
) -> ssl.SSLContext:
    """`root`: the CA file (libpq's sslrootcert); unset or "system", the system's CAs."""
    for name, path in (("sslrootcert", root), ("sslcert", cert), ("sslkey", key)):
        if path and path != "system" and not Path(path).expanduser().is_file():
            raise FiresideError(f"the database URL's {name}={path!r}: no such file")
    if root and root != "system":
        context = ssl.create_default_context(cafile=str(Path(root).expanduser()))
    else:
        context = ssl.create_default_context()
    if mode == "require":  # encrypted, not verified (libpq's "require" without a root cert)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = mode == "verify-full"
    if cert:  # a client certificate (PostgreSQL's `clientcert` / cert authentication)
        context.load_cert_chain(
            str(Path(cert).expanduser()), str(Path(key).expanduser()) if key else None, password
        )
    return context
