"""Finding 6: no rate limit on login, sign-up or password change (40 wrong passwords, then
the right one got a 200). Failed password checks are now limited per account and per client
address, sign-ups per address; past a limit a 429 with Retry-After, even for the right
password. On PostgreSQL+Redis the counts are shared by every process (two servers here)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.app_utils import Backend, chat_settings, run_chat_server
from tests.security.fresh import fresh_backend, fresh_server

pytestmark = pytest.mark.usefixtures("one_thread")

DEFAULTS = {  # the server's defaults, which tests/app_utils.py raises for the other tests
    "signups_per_address": 20,
    "auth_failures_per_address": 50,
}


def signup(url: str, email: str, password: str = "right-password") -> httpx.Response:
    body = {"email": email, "password": password, "name": "N"}
    return httpx.post(f"{url}/api/auth/signup", json=body, timeout=60)


def login(url: str, email: str, password: str) -> httpx.Response:
    body = {"email": email, "password": password}
    return httpx.post(f"{url}/api/auth/login", json=body, timeout=60)


def new_email() -> str:
    return f"u-{uuid.uuid4().hex[:10]}@example.com"


def assert_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert "fireside_session" not in r.headers.get("set-cookie", "")


def test_wrong_passwords_lock_the_account_for_a_while(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    with fresh_server(chat_backend, tmp_path, api_model_dir, **DEFAULTS) as url:
        signup(url, new_email())  # the first account (admin), out of the way
        victim, bystander = new_email(), new_email()
        assert signup(url, victim).status_code == 201
        assert signup(url, bystander).status_code == 201
        for _ in range(10):  # the default: 10 failures per account
            assert login(url, victim, "a-guess").status_code == 401
        assert_limited(login(url, victim, "right-password"))
        assert_limited(login(url, victim.upper(), "another-guess"))
        # Another account, from the same address, still logs in.
        assert login(url, bystander, "right-password").status_code == 200


def test_failures_per_address_and_signups_per_address(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    limits = {"auth_failures_per_address": 5, "signups_per_address": 3}
    with fresh_server(chat_backend, tmp_path, api_model_dir, **limits) as url:
        emails = [new_email() for _ in range(3)]
        assert [signup(url, e).status_code for e in emails] == [201, 201, 201]
        assert_limited(signup(url, new_email()))
        for i in range(5):  # one guess each at five accounts: under any account's limit
            assert login(url, f"spray-{i}@example.com", "a-guess").status_code == 401
        assert_limited(login(url, emails[1], "right-password"))


def test_password_change_guesses_are_limited(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    with fresh_server(chat_backend, tmp_path, api_model_dir, **DEFAULTS) as url:
        signup(url, new_email())
        email = new_email()
        with httpx.Client(base_url=f"{url}/api", timeout=60) as stolen_session:
            assert stolen_session.post(
                "/auth/signup", json={"email": email, "password": "right-password", "name": "V"}
            ).is_success
            change = {"current_password": "a-guess", "new_password": "taken-over-1"}
            for _ in range(10):
                assert stolen_session.post("/auth/password", json=change).status_code == 403
            change["current_password"] = "right-password"
            assert_limited(stolen_session.post("/auth/password", json=change))
        assert_limited(login(url, email, "right-password"))  # one count per account


def test_counts_are_shared_by_every_process(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    if chat_backend.redis_url is None:
        pytest.skip("one process on SQLite: the counts are in-process")
    with fresh_backend(chat_backend, tmp_path) as backend, ExitStack() as servers:
        settings = chat_settings(backend, **DEFAULTS)
        a = servers.enter_context(run_chat_server(api_model_dir, settings))
        b = servers.enter_context(run_chat_server(api_model_dir, settings))
        signup(a, new_email())
        email = new_email()
        assert signup(a, email).status_code == 201
        for i in range(10):
            assert login(a if i % 2 else b, email, "a-guess").status_code == 401
        assert_limited(login(a, email, "right-password"))
        assert_limited(login(b, email, "right-password"))
