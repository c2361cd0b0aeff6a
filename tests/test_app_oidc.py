"""Login with OpenID Connect against a real provider process (npm's oidc-provider, started
from tests/oidc/), on both backends: the whole authorization-code flow driven over HTTP,
through the provider's own login and consent pages."""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest

from tests.app_utils import Backend, Client, chat_settings, make_admin, run_chat_server

pytestmark = pytest.mark.usefixtures("one_thread")

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
CALLBACK = "/api/auth/oidc/callback"
CLIENT_ID, CLIENT_SECRET = "fireside-test", "a-client-secret-for-tests"


@dataclass
class OIDCServer:
    app: str  # the chat server's URL
    issuer: str  # the provider's


def _start_provider(sock: socket.socket, issuer: str, redirect_uri: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        LISTEN_FD=str(sock.fileno()),
        ISSUER=issuer,
        CLIENT_ID=CLIENT_ID,
        CLIENT_SECRET=CLIENT_SECRET,
        REDIRECT_URI=redirect_uri,
    )
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.Popen(
        [node, "provider.mjs"], cwd=PROVIDER_DIR, env=env, pass_fds=(sock.fileno(),)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).is_success:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the OIDC provider exited")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the OIDC provider did not start")


@pytest.fixture(scope="module")
def oidc_server(chat_backend: Backend, api_model_dir: Path) -> Iterator[OIDCServer]:
    """A chat server configured for the provider, and the provider configured for it. The
    provider's socket is bound first, so each knows the other's URL before either starts."""
    if shutil.which("node") is None:
        pytest.skip("Node.js (`node`) is not installed")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("tests/oidc/node_modules is missing: run `make unit` (npm ci in tests/oidc)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = chat_settings(
        chat_backend,
        oidc_discovery_url=f"{issuer}/.well-known/openid-configuration",
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_name="Test IdP",
    )
    make_admin(chat_backend)  # so that no account made here is the first (an admin)
    with run_chat_server(api_model_dir, settings) as app:
        proc = _start_provider(sock, issuer, app + CALLBACK)
        sock.close()  # the provider holds its own copy
        try:
            yield OIDCServer(app, issuer)
        finally:
            proc.kill()
            proc.wait(timeout=30)


# --- a browser, as far as the flow needs one ---

FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)


def to_callback(http: httpx.Client, server: OIDCServer, login: str) -> str:
    """Starts a login at the app and goes through the provider's login and consent pages as
    `login`; returns the URL the provider sends the browser back to (not yet visited)."""
    r = http.get(f"{server.app}/api/auth/oidc/login")
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(server.issuer)
    for _ in range(20):
        if r.is_redirect:
            target = urljoin(str(r.url), r.headers["location"])
            if target.startswith(server.app + CALLBACK):
                return target
            r = http.get(target)
            continue
        assert r.status_code == 200, r.text
        form = FORM.search(r.text)
        assert form is not None, r.text
        fields = {name: html.unescape(value) for name, value in HIDDEN.findall(r.text)}
        if fields.get("prompt") == "login":
            fields.update(login=login, password="anything")
        r = http.post(urljoin(str(r.url), html.unescape(form.group(1))), data=fields)
    raise AssertionError("the provider never sent the browser back")


def oidc_login(http: httpx.Client, server: OIDCServer, login: str) -> httpx.Response:
    return http.get(to_callback(http, server, login))


def new_email(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def me(http: httpx.Client, server: OIDCServer) -> httpx.Response:
    return http.get(f"{server.app}/api/auth/me")


# --- the tests ---


def test_providers_route_shows_the_button(oidc_server: OIDCServer, chat_server: str) -> None:
    r = httpx.get(f"{oidc_server.app}/api/auth/providers")
    assert r.json() == {
        "password": True,
        "oidc": {"name": "Test IdP", "login_url": "/api/auth/oidc/login"},
    }
    # A server without OIDC settings offers passwords alone, and has no OIDC login.
    assert httpx.get(f"{chat_server}/api/auth/providers").json() == {
        "password": True,
        "oidc": None,
    }
    r = httpx.get(f"{chat_server}/api/auth/oidc/login")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "oidc_not_configured"


def test_login_creates_a_user_and_a_session(oidc_server: OIDCServer) -> None:
    email = new_email("newcomer")
    with httpx.Client(timeout=30) as http:
        r = http.get(f"{oidc_server.app}/api/auth/oidc/login")
        start = dict(parse_qsl(urlsplit(r.headers["location"]).query))
        # State, nonce and PKCE (S256) all go to the provider.
        assert start["state"] and start["nonce"] and start["code_challenge_method"] == "S256"
        assert start["client_id"] == CLIENT_ID and "openid" in start["scope"].split()

        r = oidc_login(http, oidc_server, email)
        assert r.status_code == 302 and r.headers["location"] == "/"
        set_cookie = r.headers.get_list("set-cookie")
        session = next(c for c in set_cookie if c.startswith("fireside_session="))
        assert "httponly" in session.lower() and "samesite=lax" in session.lower()
        user = me(http, oidc_server).json()
        assert user["email"] == email and user["name"] == email.split("@")[0]
        assert user["status"] == "active" and user["role"] == "user"
        # The session is the ordinary kind: it makes conversations, and logout ends it.
        assert http.post(f"{oidc_server.app}/api/conversations", json={}).status_code == 201
        assert http.post(f"{oidc_server.app}/api/auth/logout").status_code == 200
        assert me(http, oidc_server).status_code == 401

        # Logging in again finds the same account (through the linked identity).
        assert oidc_login(http, oidc_server, email).status_code == 302
        assert me(http, oidc_server).json()["id"] == user["id"]
    # The account has no password: no password logs into it.
    r = httpx.post(
        f"{oidc_server.app}/api/auth/login", json={"email": email, "password": "anything"}
    )
    assert r.status_code == 401


def test_login_links_the_account_with_the_same_verified_email(oidc_server: OIDCServer) -> None:
    password_user = Client(oidc_server.app)
    mine = password_user.signup("Linked")
    with httpx.Client(timeout=30) as http:
        # The provider's email differs in case only: still the same account, which a password
        # sign-up made (Fireside never verified its email): linked once its password is given.
        r = oidc_login(http, oidc_server, mine["email"].upper())
        assert r.status_code == 302, r.text
        assert r.headers["location"].startswith("/login?link=")
        assert me(http, oidc_server).status_code == 401
        r = http.post(f"{oidc_server.app}/api/auth/oidc/link", json={"password": mine["password"]})
        assert r.status_code == 200, r.text
        assert me(http, oidc_server).json()["id"] == mine["id"]
    # The password keeps working beside the provider.
    r = password_user.http.post(
        "/auth/login", json={"email": mine["email"], "password": mine["password"]}
    )
    assert r.status_code == 200
    password_user.close()


def test_unverified_email_is_refused(oidc_server: OIDCServer) -> None:
    victim = Client(oidc_server.app)
    theirs = victim.signup("Victim")
    victim.close()
    stranger = new_email("stranger")
    for email in (theirs["email"], stranger):
        with httpx.Client(timeout=30) as http:  # a browser of its own: no provider session
            r = oidc_login(http, oidc_server, f"unverified:{email}")
            assert r.status_code == 403, r.text
            message = r.json()["error"]["message"]
            assert "has not verified the email" in message and email in message
            assert "fireside_session" not in r.headers.get("set-cookie", "")
            assert me(http, oidc_server).status_code == 401
    # Nothing was created under the unverified address: it is still free to sign up.
    body = {"email": stranger, "password": "secret-pass", "name": "S"}
    assert httpx.post(f"{oidc_server.app}/api/auth/signup", json=body).status_code == 201


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query), **changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_bad_state_and_provider_errors_are_refused(oidc_server: OIDCServer) -> None:
    email = new_email("careful")
    with httpx.Client(timeout=30) as http:
        callback = to_callback(http, oidc_server, email)
        r = http.get(_with_query(callback, state="forged-state"))
        assert r.status_code == 400
        assert "state does not match" in r.json()["error"]["message"]
        assert me(http, oidc_server).status_code == 401

    # The right state, but in a browser that never started the login: no cookie, refused.
    with httpx.Client(timeout=30) as http:
        r = http.get(callback)
        assert r.status_code == 400
        assert "no login was started" in r.json()["error"]["message"]

    with httpx.Client(timeout=30) as http:
        http.get(f"{oidc_server.app}/api/auth/oidc/login")
        r = http.get(
            f"{oidc_server.app}{CALLBACK}",
            params={"error": "access_denied", "error_description": "End-User aborted"},
        )
        assert r.status_code == 400
        assert "refused the login: End-User aborted" in r.json()["error"]["message"]
    # A sealed cookie that was tampered with does not open.
    with httpx.Client(timeout=30, cookies={"fireside_oidc": "not-a-sealed-value"}) as http:
        r = http.get(f"{oidc_server.app}{CALLBACK}", params={"state": "x", "code": "y"})
        assert r.status_code == 400
        assert "tampered" in r.json()["error"]["message"]
    # None of it made an account: the email is free.
    body = {"email": email, "password": "secret-pass", "name": "C"}
    assert httpx.post(f"{oidc_server.app}/api/auth/signup", json=body).status_code == 201


def test_new_accounts_follow_the_signup_policy(tmp_path: Path) -> None:
    """Who a provider's identity becomes, under each sign-up policy (no provider needed)."""
    from fireside.api.errors import APIError
    from fireside.app.accounts import create_user
    from fireside.app.limits import AuthLimits
    from fireside.app.oidc import Identity, LinkNeeded, link_with_password, user_for
    from fireside.settings import Settings
    from fireside.store.db import Database
    from fireside.store.ratelimit import InProcessRateLimiter

    def who(email: str, subject: str | None = None) -> Identity:
        return Identity("https://idp.example", subject or email, email, True, "Pat")

    async def run() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'policy.db'}")
        await db.migrate()
        async with db.session() as s:
            await create_user(s, "root@example.com", "root-password", "Root", "open")
            closed, approval = Settings(signup="closed"), Settings(signup="approval")
            with pytest.raises(APIError, match="sign-up is closed") as e:
                await user_for(s, who("pat@example.com"), closed)
            assert e.value.status == 403
            # Closed to newcomers, but an existing account still links (with its password,
            # as a password sign-up's email was never verified) and logs in.
            with pytest.raises(LinkNeeded):
                await user_for(s, who("ROOT@example.com", "sub-1"), closed)
            limits = AuthLimits(InProcessRateLimiter(), closed)
            root = await link_with_password(
                s, who("ROOT@example.com", "sub-1"), "root-password", limits, "127.0.0.1"
            )
            assert root.email == "root@example.com"
            assert (await user_for(s, who("ROOT@example.com", "sub-1"), closed)).id == root.id
            # Linked: the subject finds it even after the email changed at the provider.
            assert (await user_for(s, who("new@example.com", "sub-1"), closed)).id == root.id
            with pytest.raises(APIError, match="awaits an administrator") as e:
                await user_for(s, who("pat@example.com"), approval)
            assert e.value.status == 403
        await db.close()

    asyncio.run(run())
