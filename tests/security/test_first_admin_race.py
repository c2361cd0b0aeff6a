"""Finding 3: "the first account is admin" was a count followed by an insert, so concurrent
first sign-ups on a fresh server all became admins. Now exactly one does, on both backends."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.app_utils import Backend
from tests.security.fresh import fresh_server

pytestmark = pytest.mark.usefixtures("one_thread")

SIGNUPS = 8


def test_concurrent_first_signups_make_one_admin(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    with fresh_server(chat_backend, tmp_path, api_model_dir) as url:  # no account yet

        def signup(i: int) -> httpx.Response:
            email = f"first-{i}-{uuid.uuid4().hex[:8]}@example.com"
            body = {"email": email, "password": "secret-pass", "name": f"U{i}"}
            return httpx.post(f"{url}/api/auth/signup", json=body, timeout=60)

        with ThreadPoolExecutor(SIGNUPS) as pool:
            answers = list(pool.map(signup, range(SIGNUPS)))
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    roles = sorted(r.json()["role"] for r in answers)
    assert roles == ["admin"] + ["user"] * (SIGNUPS - 1)
