"""Finding 9: --api-key did not protect a server whose chat app was open: on a server started
with --api-key, a stranger signed up and chatted, tools included. Now a server others can
reach (bound beyond loopback, or guarded with --api-key) defaults to sign-up by approval, and
/v1 needs a key whenever --api-key or FIRESIDE_AUTH=required is set or the bind is not
loopback; an explicit FIRESIDE_SIGNUP / FIRESIDE_AUTH still decides."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fireside.errors import FiresideError
from fireside.server import build_app
from fireside.settings import Settings
from tests.app_utils import Backend, chat_settings, run_chat_server
from tests.security.fresh import fresh_backend

pytestmark = pytest.mark.usefixtures("one_thread")


def settings_for(backend: Backend, **given: Any) -> Settings:
    """The test helpers' settings without their explicit auth="required": only `given`."""
    values = chat_settings(backend).model_dump(exclude_unset=True, exclude={"auth"})
    return Settings(**values, **given)


def signup(url: str, name: str) -> httpx.Client:
    http = httpx.Client(base_url=f"{url}/api", timeout=60)
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    r = http.post("/auth/signup", json={"email": email, "password": "secret-pass", "name": name})
    assert r.status_code in (201, 202), r.text
    return http


@pytest.mark.parametrize(
    "given", [{"host": "0.0.0.0"}, {"api_key": "sk-operator"}], ids=["public-bind", "api-key"]
)
def test_a_reachable_server_lets_no_stranger_in(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path, given: dict[str, str]
) -> None:
    with (
        fresh_backend(chat_backend, tmp_path) as backend,
        run_chat_server(api_model_dir, settings_for(backend, **given)) as url,
    ):
        owner = signup(url, "owner")  # the first account: the admin, active
        assert owner.get("/auth/me").json()["role"] == "admin"
        stranger = signup(url, "stranger")
        assert stranger.get("/auth/me").status_code == 401  # pending: no session
        r = stranger.post("/conversations", json={})
        assert r.status_code == 401
        # /v1 needs a key: none, or a made-up one, is refused; a personal key works.
        assert httpx.get(f"{url}/v1/models").status_code == 401
        bad = {"Authorization": "Bearer fs-made-up"}
        assert httpx.get(f"{url}/v1/models", headers=bad).status_code == 401
        key = owner.post("/keys", json={"name": "k"}).json()["key"]
        mine = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/v1/models", headers=mine).status_code == 200
        # The probes are public (an orchestrator has no key); the metrics are an admin's.
        for probe in ("/health", "/livez", "/readyz"):
            assert httpx.get(f"{url}{probe}").status_code == 200, probe
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=bad).status_code == 401
        assert httpx.get(f"{url}/metrics", headers=mine).status_code == 200  # the admin's key
        owner.close()
        stranger.close()


def test_a_private_server_stays_open_and_explicit_settings_win(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(host="::1").default_signup() == "open"
    assert Settings(host="localhost").v1_requires_key() is False
    assert Settings(host="192.168.1.5").default_signup() == "approval"
    with fresh_backend(chat_backend, tmp_path) as backend:
        with run_chat_server(api_model_dir, settings_for(backend)) as url:  # 127.0.0.1
            signup(url, "owner").close()
            newcomer = signup(url, "newcomer")
            assert newcomer.get("/auth/me").status_code == 200  # open on one's own machine
            assert httpx.get(f"{url}/v1/models").status_code == 200
            newcomer.close()
        monkeypatch.setenv("FIRESIDE_SIGNUP", "open")
        monkeypatch.setenv("FIRESIDE_AUTH", "optional")
        public = settings_for(backend, host="0.0.0.0")
        assert (public.default_signup(), public.v1_requires_key()) == ("open", False)


def test_api_only_server_beyond_loopback_needs_a_key(api_model_dir: Path) -> None:
    with pytest.raises(FiresideError, match="--api-key"):
        build_app(Settings(model=str(api_model_dir), app=False, host="0.0.0.0"))
    build_app(Settings(model=str(api_model_dir), app=False, host="0.0.0.0", api_key="sk-x"))
    build_app(Settings(model=str(api_model_dir), app=False, host="0.0.0.0", auth="optional"))
