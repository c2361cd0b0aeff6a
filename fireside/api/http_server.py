"""What `fireside serve` asks of uvicorn besides the app: HTTPS, which proxies'
X-Forwarded-* headers it believes, and the logging set-up (fireside.logs)."""

from __future__ import annotations

from typing import Any

from fireside import logs
from fireside.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's keywords for these settings. A missing certificate or key file stops
    start-up here, before the model loads, not deep inside uvicorn."""
    tls = settings.tls_files()
    return {
        "host": settings.host,
        "port": settings.port,
        # Open streams would hold a shutdown forever; after the grace period they are cut.
        "timeout_graceful_shutdown": 10,
        "ssl_certfile": tls[0] if tls else None,
        "ssl_keyfile": tls[1] if tls else None,
        # X-Forwarded-For/-Proto from these proxies only (uvicorn's ProxyHeadersMiddleware);
        # "" believes none.
        "proxy_headers": bool(settings.forwarded_allow_ips.strip()),
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "log_config": logs.log_config(settings.log_format, settings.log_level),
    }
