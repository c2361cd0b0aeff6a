"""Connections to OpenAI-compatible endpoints, on both backends, against a second real
Fireside server process (its /v1 behind a personal API key): admin-only routes, keys sealed
at rest and never returned, the model list with a clear error for an endpoint that is down,
and answers generated there through the same task, events, resume and stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from fireside.app.connections import Connections
from fireside.settings import ConnectionSetting
from fireside.store.db import Database
from fireside.store.models import Connection
from tests.app_utils import (
    HOLD,
    Backend,
    Client,
    SSEEvent,
    chat_settings,
    make_admin,
    parse_sse,
    run_chat_server,
)
from tests.test_app_restart import start_server_process

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Remote:
    url: str
    key: str  # a personal API key there: its /v1 takes nothing else

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@dataclass
class Server:
    url: str
    backend: Backend
    admin: Client


@pytest.fixture(scope="module")
def remote(api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """The second `fireside serve` process (the same app, with the test engine that holds a
    [hold] answer open until the client leaves)."""
    proc, url = start_server_process(
        api_model_dir, tmp_path_factory.mktemp("remote"), {"FIRESIDE_AUTH": "required"}
    )
    try:
        owner = Client(url)
        owner.signup("Owner")
        key = owner.http.post("/keys", json={"name": "connection"}).json()["key"]
        owner.close()
        yield Remote(url, key)
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(chat_backend: Backend, api_model_dir: Path, remote: Remote) -> Iterator[Server]:
    """A chat server with one connection from settings ("fixed"); admins add the others."""
    fixed = ConnectionSetting(name="fixed", base_url=remote.base_url, api_key=SecretStr(remote.key))
    settings = chat_settings(chat_backend, connections=[fixed])
    with run_chat_server(api_model_dir, settings) as url:
        admin = Client(url)
        creds = make_admin(chat_backend)
        assert admin.http.post("/auth/login", json=creds).status_code == 200
        yield Server(url, chat_backend, admin)
        # The database is the other app tests' too: leave it without connections.
        assert admin.http.put("/admin/connections", json=[]).status_code == 200
        admin.close()


@pytest.fixture
def user(server: Server) -> Iterator[Client]:
    c = Client(server.url)
    c.signup("Connected")
    yield c
    c.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def put(server: Server, connections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = server.admin.http.put("/admin/connections", json=connections)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def stored_connections(backend: Backend) -> dict[str, bytes | None]:
    async def read() -> dict[str, bytes | None]:
        db = Database(chat_settings(backend).resolved_database_url())
        async with db.session() as s:
            rows = await s.scalars(select(Connection))
            found = {r.name: r.api_key_encrypted for r in rows}
        await db.close()
        return found

    return asyncio.run(read())


def test_only_admins_see_and_change_connections(server: Server, user: Client) -> None:
    assert user.http.get("/admin/connections").status_code == 403
    assert user.http.put("/admin/connections", json=[]).status_code == 403
    anonymous = Client(server.url)
    assert anonymous.http.get("/admin/connections").status_code == 401
    assert anonymous.http.put("/admin/connections", json=[]).status_code == 401
    anonymous.close()


def test_keys_are_sealed_at_rest_and_never_returned(server: Server, remote: Remote) -> None:
    data = put(server, [{"name": "remote", "base_url": remote.base_url, "api_key": remote.key}])
    assert remote.key not in server.admin.http.get("/admin/connections").text
    assert {c["name"]: (c["source"], c["has_api_key"]) for c in data} == {
        "fixed": ("settings", True),
        "remote": ("admin", True),
    }
    assert all("api_key" not in c for c in data)
    sealed = stored_connections(server.backend)["remote"]
    assert sealed is not None and remote.key.encode() not in sealed
    # It opens with the key derived from this server's secret, and only with that one.
    assert Connections(chat_settings(server.backend)).unseal(sealed) == remote.key
    other = chat_settings(server.backend, secret_key=SecretStr("another-secret-entirely"))
    assert Connections(other).unseal(sealed) is None

    # Sent back as read (no api_key), the key stays; null removes it.
    again = put(server, [{"name": "remote", "base_url": remote.base_url + "/"}])
    assert next(c for c in again if c["name"] == "remote")["has_api_key"] is True
    assert stored_connections(server.backend)["remote"] == sealed
    cleared = put(server, [{"name": "remote", "base_url": remote.base_url, "api_key": None}])
    assert next(c for c in cleared if c["name"] == "remote")["has_api_key"] is False
    assert stored_connections(server.backend) == {"remote": None}


def test_bad_connection_lists_are_refused(server: Server) -> None:
    ok = {"name": "a", "base_url": "http://127.0.0.1:1/v1"}
    for body, status in (
        ([ok, ok], 400),  # two of one name
        ([{"name": "fixed", "base_url": "http://x/v1"}], 409),  # settings' own
        ([{"name": "a", "base_url": "ftp://x"}], 400),
        ([{"name": "a b", "base_url": "http://x/v1"}], 400),
        ([{"name": "a", "base_url": "http://x/v1", "password": "x"}], 400),
        ([{"name": "a", "base_url": "http://x/v1", "models": [""]}], 400),
        ({"name": "a"}, 400),
        ([ok] * 101, 400),
    ):
        r = server.admin.http.put("/admin/connections", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"]


def test_models_list_local_and_connected_ones(server: Server, remote: Remote, user: Client) -> None:
    put(
        server,
        [
            {"name": "remote", "base_url": remote.base_url, "api_key": remote.key},
            {"name": "nokey", "base_url": remote.base_url},
            {"name": "down", "base_url": closed_port_url()},
            {"name": "listed", "base_url": closed_port_url(), "models": ["m1", "m2"]},
        ],
    )
    r = user.http.get("/models").json()
    ids = {m["id"]: (m["source"], m["connection"]) for m in r["data"]}
    assert ids == {
        "tiny": ("local", None),
        "fixed/tiny": ("connection", "fixed"),
        "remote/tiny": ("connection", "remote"),
        "listed/m1": ("connection", "listed"),  # as the admin listed them, not asked for
        "listed/m2": ("connection", "listed"),
    }
    errors = {e["connection"]: e["error"] for e in r["errors"]}
    assert set(errors) == {"nokey", "down"}
    assert "answered 401" in errors["nokey"]
    assert "cannot be reached" in errors["down"]
    assert remote.key not in str(r)


def deltas(events: list[SSEEvent]) -> str:
    return "".join(e.data["text"] for e in events if e.event == "delta")


def test_answers_come_from_the_connection(server: Server, remote: Remote, user: Client) -> None:
    put(
        server,
        [
            {"name": "remote", "base_url": remote.base_url, "api_key": remote.key},
            {"name": "nokey", "base_url": remote.base_url},
        ],
    )
    conv = user.new_conversation(model="remote/tiny", max_tokens=12)
    path = f"/conversations/{conv['id']}/messages"
    first = user.events("POST", path, limit=3, json={"content": "Hello over there"})
    rest = user.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": first[-1].id}
    )
    events = first + rest
    assert [e.event for e in events[:2]] == ["message", "message"]
    assert len({e.id for e in events}) == len(events)  # resumed: every event once
    done = events[-1]
    assert done.event == "done" and done.data["message"]["status"] == "complete"
    stored = user.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert deltas(events) == stored["content"] == done.data["message"]["content"] != ""
    assert stored["model"] == "remote/tiny"

    # The answer really comes from the endpoint: without its key, the endpoint refuses it.
    refused = user.new_conversation(model="nokey/tiny")
    events = user.send(refused["id"], "Hello without a key")
    assert events[-1].data["message"]["status"] == "error"
    [error] = [e for e in events if e.event == "error"]
    assert "'nokey' failed" in error.data["error"] and "401" in error.data["error"]

    # A model nobody offers is refused up front.
    unknown = user.new_conversation(model="elsewhere/tiny")
    r = user.http.post(f"/conversations/{unknown['id']}/messages", json={"content": "Hi"})
    assert r.status_code == 400 and "elsewhere/tiny" in r.json()["error"]["message"]


def test_stop_ends_an_answer_from_a_connection(server: Server, user: Client) -> None:
    conv = user.new_conversation(model="fixed/tiny")  # the connection from settings
    path = f"/conversations/{conv['id']}/messages"
    held: list[SSEEvent] = []
    # The endpoint holds this answer open after its first text, until its client leaves.
    with user.http.stream("POST", path, json={"content": f"{HOLD} over there"}) as r:
        for e in parse_sse(r.iter_lines()):
            held.append(e)
            if e.event == "delta":
                break
    assert user.http.post(f"/conversations/{conv['id']}/stop").json() == {"stopping": True}
    tail = user.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": held[-1].id}
    )
    final = tail[-1].data["message"]
    assert tail[-1].event == "done" and final["status"] == "stopped"
    stored = user.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert stored["status"] == "stopped" and stored["content"] == deltas(held + tail) != ""
