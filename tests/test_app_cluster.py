"""Two server processes sharing PostgreSQL and Redis: an answer started on one is resumed
from the other (every event once, the text as stored), and stopped from the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app_utils import HOLD, Backend, Client, SSEEvent, parse_sse
from tests.test_app_restart import start_server_process

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def second_server(chat_backend: Backend, api_model_dir: Path) -> Iterator[str]:
    assert chat_backend.name == "postgres"
    env = {
        "FIRESIDE_DATABASE_URL": chat_backend.database_url or "",
        "FIRESIDE_REDIS_URL": chat_backend.redis_url or "",
        # It shares the chat_server's counts (one database, one Redis): the same raised limits.
        "FIRESIDE_SIGNUPS_PER_ADDRESS": "100000",
        "FIRESIDE_AUTH_FAILURES_PER_ADDRESS": "100000",
    }
    proc, url = start_server_process(api_model_dir, chat_backend.data_dir, env)
    try:
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)


def deltas(events: list[SSEEvent]) -> str:
    return "".join(e.data["text"] for e in events if e.event == "delta")


# Processes share state only through PostgreSQL and Redis: this runs on that backend alone.
@pytest.mark.parametrize("chat_backend", ["postgres"], indirect=True)
def test_resume_and_stop_on_another_process(chat_server: str, second_server: str) -> None:
    here = Client(chat_server)
    me = here.signup("Multi")
    there = Client(second_server)
    login = {"email": me["email"], "password": me["password"]}
    assert there.http.post("/auth/login", json=login).status_code == 200

    conv = here.new_conversation(max_tokens=24)
    path = f"/conversations/{conv['id']}/messages"
    first = here.events("POST", path, limit=4, json={"content": "Across processes"})
    rest = there.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": first[-1].id}
    )
    events = first + rest
    assert len({e.id for e in events}) == len(events)
    assert events[-1].event == "done"
    final = events[-1].data["message"]
    stored = there.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert deltas(events) == final["content"] == stored["content"]
    assert stored["status"] == "complete"

    # Held on the first process, stopped through the second.
    held: list[SSEEvent] = []
    with here.http.stream("POST", path, json={"content": f"{HOLD} stop me"}) as r:
        for e in parse_sse(r.iter_lines()):
            held.append(e)
            if e.event == "delta":
                break
    assert there.http.post(f"/conversations/{conv['id']}/stop").json() == {"stopping": True}
    tail = there.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": held[-1].id}
    )
    assert tail[-1].event == "done" and tail[-1].data["message"]["status"] == "stopped"
    here.close()
    there.close()


@pytest.mark.parametrize("chat_backend", ["postgres"], indirect=True)
def test_resume_over_websocket_on_another_process(chat_server: str, second_server: str) -> None:
    """An answer streamed over SSE from one process is followed to its end over the other
    process's WebSocket, from the last event the client saw."""
    import json

    from websockets.sync.client import connect

    here = Client(chat_server)
    here.signup("Sock")
    # The session made on the first process opens the second's socket (sessions are rows).
    session = here.http.cookies.get("fireside_session")
    there = Client(second_server)
    there.http.cookies.set("fireside_session", str(session))
    conv = here.new_conversation(max_tokens=24)
    first = here.events(
        "POST", f"/conversations/{conv['id']}/messages", limit=3, json={"content": "Sockets"}
    )
    cookie = f"fireside_session={session}"
    ws_url = second_server.replace("http", "ws") + "/api/ws"
    with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": second_server}) as ws:
        command = {"type": "subscribe", "conversation_id": conv["id"]}
        ws.send(json.dumps(command | {"last_event_id": first[-1].id}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["event"] != "end":
            frames.append(json.loads(ws.recv(timeout=60)))
    rest = [SSEEvent(f["id"], f["event"], f["data"]) for f in frames[:-1]]
    events = first + rest
    assert len({e.id for e in events}) == len(events)
    assert events[-1].event == "done"
    stored = there.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert deltas(events) == events[-1].data["message"]["content"] == stored["content"]
    here.close()
    there.close()
