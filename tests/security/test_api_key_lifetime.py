"""Finding 8: personal API keys were forever: they survived a password change, never expired,
and a key could mint new keys. Now a password change revokes every key, a key may expire
(`expires_in_days`; refused with a 401 after), and only a logged-in session makes or revokes
keys (403 to a Bearer key)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from tests.app_utils import Backend, Client, chat_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def new_key(client: Client, **fields: object) -> dict[str, str]:
    r = client.http.post("/keys", json={"name": "k", **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def works(url: str, key: str) -> tuple[int, int]:
    """(status on the chat API, status on the OpenAI API) with `key` as Bearer."""
    auth = {"Authorization": f"Bearer {key}"}
    return (
        httpx.get(f"{url}/api/auth/me", headers=auth).status_code,
        httpx.get(f"{url}/v1/models", headers=auth).status_code,
    )


def test_a_password_change_revokes_every_key(chat_server: str) -> None:
    client = Client(chat_server)
    me = client.signup("Keys")
    keys = [new_key(client)["key"], new_key(client, expires_in_days=30)["key"]]
    assert [works(chat_server, k) for k in keys] == [(200, 200), (200, 200)]
    change = {"current_password": me["password"], "new_password": "a-new-password"}
    assert client.http.post("/auth/password", json=change).status_code == 200
    assert [works(chat_server, k) for k in keys] == [(401, 401), (401, 401)]
    assert client.http.get("/keys").json()["data"] == []
    client.close()


def test_keys_expire(chat_server: str, chat_backend: Backend) -> None:
    client = Client(chat_server)
    client.signup("Expiring")
    forever = new_key(client)
    assert forever["expires_at"] is None
    made = new_key(client, expires_in_days=7)
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(days=6.9) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert works(chat_server, made["key"]) == (200, 200)
    _set_expiry(chat_backend, made["id"], datetime.now(UTC) - timedelta(seconds=1))
    assert works(chat_server, made["key"]) == (401, 401)
    assert works(chat_server, forever["key"]) == (200, 200)
    for bad in (0, -1, 3651, "soon"):
        assert (
            client.http.post("/keys", json={"name": "k", "expires_in_days": bad}).status_code == 400
        )
    client.close()


def test_a_key_cannot_make_or_revoke_keys(chat_server: str) -> None:
    client = Client(chat_server)
    client.signup("Minter")
    stolen, other = new_key(client), new_key(client)
    with httpx.Client(base_url=f"{chat_server}/api", timeout=60) as thief:
        thief.headers["Authorization"] = f"Bearer {stolen['key']}"
        r = thief.post("/keys", json={"name": "mine now"})
        assert r.status_code == 403, r.text
        assert "logged-in session" in r.json()["error"]["message"]
        assert thief.delete(f"/keys/{other['id']}").status_code == 403
        assert thief.get("/keys").status_code == 200  # reading them is fine
    ids = {k["id"] for k in client.http.get("/keys").json()["data"]}
    assert ids == {stolen["id"], other["id"]}
    assert client.http.delete(f"/keys/{other['id']}").status_code == 204  # the session can
    client.close()


def _set_expiry(backend: Backend, key_id: str, when: datetime) -> None:
    from fireside.store.db import Database
    from fireside.store.models import ApiKey

    async def run() -> None:
        db = Database(chat_settings(backend).resolved_database_url())
        async with db.session() as s:
            await s.execute(
                update(ApiKey).where(ApiKey.id == uuid.UUID(key_id)).values(expires_at=when)
            )
            await s.commit()
        await db.close()

    asyncio.run(run())
