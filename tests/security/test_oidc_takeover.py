"""Finding 2: OpenID Connect pre-account takeover. A squatter signed up with a password under
the victim's email; the victim's first login through the provider (which verified the email)
was linked into the squatter's account, whose password kept working. Now an identity is linked
to an account Fireside never verified the email of only with that account's password, and the
link ends every other session and key of the account. Against the real provider process."""

from __future__ import annotations

import httpx
import pytest

from tests import test_app_oidc
from tests.app_utils import Client
from tests.test_app_oidc import OIDCServer, me, new_email, oidc_login

# The chat server and the provider process of tests/test_app_oidc.py, for this module.
server = test_app_oidc.oidc_server

# chat_server: migrates the shared database before the module's server makes its admin there.
pytestmark = pytest.mark.usefixtures("one_thread", "chat_server")


def link(http: httpx.Client, at: OIDCServer, password: str) -> httpx.Response:
    return http.post(f"{at.app}/api/auth/oidc/link", json={"password": password})


def test_a_squatted_account_is_not_linked(server: OIDCServer) -> None:
    victim_email = new_email("victim")
    squatter = Client(server.app)
    body = {"email": victim_email, "password": "squatter-pass", "name": "Victim"}
    squatted = squatter.http.post("/auth/signup", json=body)
    assert squatted.status_code == 201
    conversation = squatter.new_conversation(title="bait")
    with httpx.Client(timeout=30) as victim:
        r = oidc_login(victim, server, victim_email)
        # Not logged in: sent to the page that asks for the account's password.
        assert r.status_code == 302, r.text
        assert r.headers["location"].startswith("/login?link=")
        assert "fireside_session" not in r.headers.get("set-cookie", "")
        assert me(victim, server).status_code == 401
        assert victim.get(f"{server.app}/api/conversations").status_code == 401
        # The victim does not know the squatter's password: no link, no session; and guessing
        # it is limited as a login is (10 failures per account).
        for _ in range(10):
            r = link(victim, server, "a-guess")
            assert r.status_code == 403, r.text
        assert link(victim, server, "squatter-pass").status_code == 429
        assert me(victim, server).status_code == 401
        # Logging in again through the provider still does not land in that account.
        r = oidc_login(victim, server, victim_email)
        assert r.headers["location"].startswith("/login?link=")
        assert me(victim, server).status_code == 401
    # Nothing was linked: the squatter's account is as it was, and holds nothing of the victim.
    listed = squatter.http.get("/conversations").json()["data"]
    assert [c["id"] for c in listed] == [conversation["id"]]
    squatter.close()


def test_the_owner_links_with_the_password_once(server: OIDCServer) -> None:
    owner = Client(server.app)
    mine = owner.signup("Owner")
    key = owner.http.post("/keys", json={"name": "k"}).json()["key"]
    other_session = Client(server.app)
    assert other_session.http.post(
        "/auth/login", json={"email": mine["email"], "password": mine["password"]}
    ).is_success
    with httpx.Client(timeout=30) as browser:
        r = oidc_login(browser, server, mine["email"])
        assert r.headers["location"].startswith("/login?link=")
        # Without the link cookie (another browser), nothing to link.
        assert (
            httpx.post(
                f"{server.app}/api/auth/oidc/link", json={"password": mine["password"]}
            ).status_code
            == 400
        )
        r = link(browser, server, mine["password"])
        assert r.status_code == 200, r.text
        assert r.json()["id"] == mine["id"]
        assert me(browser, server).json()["id"] == mine["id"]
        # Every other session and key of the account has ended.
        assert owner.http.get("/auth/me").status_code == 401
        assert other_session.http.get("/auth/me").status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.app}/api/auth/me", headers=auth).status_code == 401
        # The link cookie was used up.
        assert link(browser, server, mine["password"]).status_code == 400
    with httpx.Client(timeout=30) as later:  # linked: the provider alone logs in now
        r = oidc_login(later, server, mine["email"])
        assert r.status_code == 302 and r.headers["location"] == "/"
        assert me(later, server).json()["id"] == mine["id"]
    owner.close()
    other_session.close()
