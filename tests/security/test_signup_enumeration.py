"""Finding 17: sign-up revealed whether an email has an account (409). Accepted under open
sign-up (anyone may sign up there and learn it so); under approval every sign-up after the
first account is answered alike, whether or not the email exists, and no account is made
twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.app_utils import Backend
from tests.security.fresh import fresh_server

pytestmark = pytest.mark.usefixtures("one_thread")


def test_approval_signups_are_answered_alike(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    with (
        fresh_server(chat_backend, tmp_path, api_model_dir, signup="approval") as url,
        httpx.Client(base_url=f"{url}/api", timeout=60) as admin,
    ):
        root = {"email": f"root-{uuid.uuid4().hex[:8]}@example.com", "password": "root-pass"}
        assert admin.post("/auth/signup", json={**root, "name": "Root"}).status_code == 201

        def signup(email: str, password: str) -> httpx.Response:
            body = {"email": email, "password": password, "name": "N"}
            return httpx.post(f"{url}/api/auth/signup", json=body, timeout=60)

        email = f"taken-{uuid.uuid4().hex[:8]}@example.com"
        new = signup(email, "first-pass")
        again = signup(email.upper(), "other-pass")  # the email has an account now
        also_root = signup(root["email"], "other-pass")  # an active admin's
        for r in (new, again, also_root):
            assert (r.status_code, r.json()) == (new.status_code, new.json()), r.text
            assert "set-cookie" not in r.headers
        assert new.status_code == 202 and new.json()["status"] == "pending"
        users = admin.get("/admin/users", params={"limit": 200}).json()["data"]
        assert sorted(u["email"] for u in users) == sorted([root["email"], email])
        # The first sign-up's password is the account's; the second changed nothing.
        approved = next(u for u in users if u["email"] == email)
        admin.patch(f"/admin/users/{approved['id']}", json={"status": "active"})
        login = {"email": email, "password": "first-pass"}
        assert httpx.post(f"{url}/api/auth/login", json=login).status_code == 200
        login["password"] = "other-pass"
        assert httpx.post(f"{url}/api/auth/login", json=login).status_code == 401


def test_open_signup_still_says_409(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    """Documented as accepted: under open sign-up a taken email is a 409."""
    with fresh_server(chat_backend, tmp_path, api_model_dir, signup="open") as url:
        email = f"open-{uuid.uuid4().hex[:8]}@example.com"
        body = {"email": email, "password": "secret-pass", "name": "O"}
        assert httpx.post(f"{url}/api/auth/signup", json=body).status_code == 201
        assert httpx.post(f"{url}/api/auth/signup", json=body).status_code == 409
