"""Connections beyond what test_app_data covers, on both backends, against a second real
server process (its /v1 behind a personal API key): a connection from settings
(FIRESIDE_CONNECTIONS), the model list saying why a connection lists nothing, and an answer
from a connection resumed after a cut and stopped like a local one."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from fireside.settings import ConnectionSetting
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
    admin: Client


@pytest.fixture(scope="module")
def remote(api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """The second server process (the test app, whose engine holds a [hold] answer open
    after its first text until the client leaves)."""
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
    fixed = ConnectionSetting(name="fixed", base_url=remote.base_url, api_key=SecretStr(remote.key))
    settings = chat_settings(chat_backend, connections=[fixed])
    with run_chat_server(api_model_dir, settings) as url:
        admin = Client(url)
        assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
        yield Server(url, admin)
        # The database is the other app tests' too: leave it without connections.
        assert admin.http.put("/admin/connections", json={"data": []}).status_code == 200
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


def deltas(events: list[SSEEvent]) -> str:
    return "".join(e.data["text"] for e in events if e.event == "delta")


def test_models_of_settings_and_admin_connections(
    server: Server, remote: Remote, user: Client
) -> None:
    wanted = [
        {"name": "keyless", "base_url": remote.base_url},
        {"name": "down", "base_url": closed_port_url()},
        # The admin's "fixed" does not replace the one from settings.
        {"name": "fixed", "base_url": closed_port_url()},
    ]
    r = server.admin.http.put("/admin/connections", json={"data": wanted})
    assert r.status_code == 200, r.text
    listed = user.http.get("/models").json()
    assert [(m["id"], m["source"]) for m in listed["data"]] == [
        ("tiny", "local"),
        ("fixed/tiny", "fixed"),
    ]
    errors = {e["connection"]: e["error"] for e in listed["errors"]}
    assert errors == {
        "keyless": "the endpoint answered 401",
        "down": "the endpoint cannot be reached",
    }
    assert remote.key not in str(listed) and remote.url not in str(listed)


def test_an_answer_from_a_connection_resumes_and_stops(server: Server, user: Client) -> None:
    conv = user.new_conversation(model="fixed/tiny", max_tokens=12)
    path = f"/conversations/{conv['id']}/messages"
    first = user.events("POST", path, limit=3, json={"content": "Hello over there"})
    rest = user.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": first[-1].id}
    )
    events = first + rest
    assert len({e.id for e in events}) == len(events)  # resumed: every event once
    done = events[-1].data["message"]
    assert events[-1].event == "done" and done["status"] == "complete"
    stored = user.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert deltas(events) == stored["content"] == done["content"] != ""
    assert stored["model"] == "fixed/tiny"

    # The endpoint holds this answer open after its first text, until its client leaves.
    held: list[SSEEvent] = []
    with user.http.stream("POST", path, json={"content": f"{HOLD} over there"}) as r:
        for e in parse_sse(r.iter_lines()):
            held.append(e)
            if e.event == "delta":
                break
    assert user.http.post(f"/conversations/{conv['id']}/stop").json() == {"stopping": True}
    tail = user.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": held[-1].id}
    )
    assert tail[-1].event == "done" and tail[-1].data["message"]["status"] == "stopped"
    stored = user.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert stored["status"] == "stopped" and stored["content"] == deltas(held + tail) != ""
