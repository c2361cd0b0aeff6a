"""X-Forwarded-For and X-Forwarded-Proto count only from the proxies in
--forwarded-allow-ips (default: this machine's loopback): from anyone else they would let a
client pick its own address for the per-address limits, and claim https for Secure cookies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fireside.api.http_server import uvicorn_options
from tests.api_utils import run_app
from tests.app_utils import Backend, chat_app, chat_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def _signup(http: httpx.Client, n: int, headers: dict[str, str]) -> httpx.Response:
    body = {"email": f"p{n}@example.com", "password": "secret-pass", "name": "P"}
    return http.post("/api/auth/signup", json=body, headers=headers)


@pytest.mark.parametrize(
    ("allow", "trusted"),
    [("127.0.0.1,::1", True), ("", False), ("192.0.2.7", False)],
    ids=["loopback-default", "none", "another-proxy"],
)
def test_forwarded_headers_only_from_trusted_proxies(
    api_model_dir: Path, tmp_path: Path, allow: str, trusted: bool
) -> None:
    settings = chat_settings(
        Backend("sqlite", tmp_path), signups_per_address=1, forwarded_allow_ips=allow
    )
    if allow == "127.0.0.1,::1":  # the default, as `fireside serve` has it unset
        assert settings.forwarded_allow_ips == type(settings)().forwarded_allow_ips
    options = {
        k: v
        for k, v in uvicorn_options(settings).items()
        if k in ("proxy_headers", "forwarded_allow_ips")
    }
    with (
        run_app(chat_app(api_model_dir, settings), options=options) as url,
        httpx.Client(base_url=url) as http,
    ):
        one = _signup(http, 1, {"X-Forwarded-For": "203.0.113.1", "X-Forwarded-Proto": "https"})
        assert one.status_code == 201, one.text
        secure = "secure" in one.headers["set-cookie"].lower()
        # Believed, the proxy's word makes the cookie Secure (the browser spoke https to it).
        assert secure is trusted
        # A second client address behind the proxy: its own count when the proxy is believed;
        # else both are the connection's address, which has used its one sign-up.
        two = _signup(http, 2, {"X-Forwarded-For": "203.0.113.2"})
        assert two.status_code == (201 if trusted else 429), two.text
        if trusted:
            again = _signup(http, 3, {"X-Forwarded-For": "203.0.113.1"})
            assert again.status_code == 429
        plain = _signup(http, 4, {})
        assert plain.status_code == (201 if trusted else 429)
        if trusted:
            assert "secure" not in plain.headers["set-cookie"].lower()
