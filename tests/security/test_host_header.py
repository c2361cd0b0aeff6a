"""Finding 4: the Host header is checked, and the Origin check does not trust it.

A DNS-rebinding page (evil.example resolving to 127.0.0.1) sends Host and Origin that match
each other; before the fix it signed up the first account, the admin, of a fresh install."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.app_utils import Backend, chat_settings, run_chat_server

pytestmark = pytest.mark.usefixtures("one_thread")

SIGNUP = {"email": "first@example.com", "password": "secret-pass", "name": "First"}


@pytest.fixture
def fresh_server(tmp_path: Path, api_model_dir: Path) -> Iterator[str]:
    """A fresh install: no accounts yet, so the first sign-up would be the admin."""
    with run_chat_server(api_model_dir, chat_settings(Backend("sqlite", tmp_path))) as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_a_rebinding_page_cannot_sign_up_the_first_admin(fresh_server: str) -> None:
    port = port_of(fresh_server)
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    with httpx.Client(base_url=fresh_server) as http:
        r = http.post("/api/auth/signup", json=SIGNUP, headers=rebound)
        assert r.status_code == 400, r.text
        # Nothing of the server answers under a foreign name: not the API, not the page.
        for path in ("/health", "/v1/models", "/api/auth/me", "/"):
            assert http.get(path, headers={"Host": "evil.example"}).status_code == 400
        ws_url = fresh_server.replace("http", "ws") + "/api/ws"
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers={"Host": f"evil.example:{port}"})
        # The server's own names still work, on any port, and the first account is made then.
        assert http.get("/health", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert http.get("/health", headers={"Host": "[::1]"}).status_code == 200
        own = {"Origin": f"http://localhost:{port}"}
        r = http.post("/api/auth/signup", json=SIGNUP, headers=own)
        assert r.status_code == 201, r.text
        assert r.json()["role"] == "admin"


def test_origin_is_checked_against_the_allowed_hosts_not_the_request_host(
    tmp_path: Path, api_model_dir: Path
) -> None:
    settings = chat_settings(
        Backend("sqlite", tmp_path), allowed_hosts=["chat.example.com", "127.0.0.1"]
    )
    with (
        run_chat_server(api_model_dir, settings) as url,
        httpx.Client(base_url=url, headers={"Host": "chat.example.com"}) as http,
    ):
        assert http.get("/health", headers={"Host": "localhost"}).status_code == 400
        bad = http.post(
            "/api/auth/signup",
            json=SIGNUP,
            headers={"Host": "evil.example", "Origin": "http://evil.example"},
        )
        assert bad.status_code == 400
        # A matching Host lets it in, a foreign Origin is still refused.
        foreign = http.post(
            "/api/auth/signup", json=SIGNUP, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403, foreign.text
        mine = http.post(
            "/api/auth/signup", json=SIGNUP, headers={"Origin": "https://chat.example.com"}
        )
        assert mine.status_code == 201, mine.text


def test_the_defaults_name_the_bind_address_and_loopback_only() -> None:
    from fireside.api.hosts import default_allowed_hosts, origin_allowed
    from fireside.settings import Settings

    assert Settings().resolved_allowed_hosts() == ["localhost", "127.0.0.1", "[::1]"]
    assert "10.0.0.5" in Settings(host="10.0.0.5").resolved_allowed_hosts()
    assert "0.0.0.0" not in Settings(host="0.0.0.0").resolved_allowed_hosts()
    assert default_allowed_hosts("fd00::1")[-1] == "[fd00::1]"
    hosts = ["chat.example.com", "*.corp.example"]
    assert origin_allowed("https://chat.example.com:8443", hosts, [], "evil.example")
    assert origin_allowed("https://a.corp.example", hosts, [], "")
    assert not origin_allowed("http://evil.example", hosts, [], "evil.example")
    assert not origin_allowed("null", hosts, [], "null")
    assert origin_allowed("http://dev:5173", hosts, ["http://dev:5173"], "")
