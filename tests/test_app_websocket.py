"""WS /api/ws as the page uses it: one socket following several conversations at once, each
frame named by its conversation; an unsubscribe ends that conversation's subscription and no
other; a subscription ends with an `end` frame, as an SSE body ends. On both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.app_utils import HOLD, Client, SSEEvent, parse_sse

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    yield c
    c.close()


def open_socket(chat_server: str, client: Client) -> ClientConnection:
    cookie = f"fireside_session={client.http.cookies.get('fireside_session')}"
    ws_url = chat_server.replace("http", "ws") + "/api/ws"
    return connect(ws_url, additional_headers={"Cookie": cookie, "Origin": chat_server})


def held_answer(client: Client, conversation_id: str) -> list[SSEEvent]:
    """Starts an answer that holds after its first piece of text; its events up to that piece."""
    posted: list[SSEEvent] = []
    path = f"/conversations/{conversation_id}/messages"
    with client.http.stream("POST", path, json={"content": f"{HOLD} please"}) as r:
        for e in parse_sse(r.iter_lines()):
            posted.append(e)
            if e.event == "delta":
                break
    return posted


def send(ws: ClientConnection, kind: str, conversation_id: str, **fields: Any) -> None:
    ws.send(json.dumps({"type": kind, "conversation_id": conversation_id, **fields}))


def recv(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(ws.recv(timeout=30)))


def test_one_socket_follows_two_conversations_and_unsubscribes_one(
    client: Client, chat_server: str
) -> None:
    client.signup("Mux")
    a, b = (client.new_conversation(max_tokens=200)["id"] for _ in range(2))
    posted = {a: held_answer(client, a), b: held_answer(client, b)}
    with open_socket(chat_server, client) as ws:
        for cid in (a, b):
            send(ws, "subscribe", cid, last_event_id=posted[cid][0].id)
        # Both conversations' events after the given ids, interleaved in any order, each
        # frame naming its conversation (ids alone collide: both logs count 1, 2, 3...).
        want = {cid: [(e.id, e.event, e.data) for e in posted[cid][1:]] for cid in (a, b)}
        got: dict[str, list[tuple[str, str, Any]]] = {a: [], b: []}
        while any(len(got[cid]) < len(want[cid]) for cid in (a, b)):
            frame = recv(ws)
            got[frame["conversation_id"]].append((frame["id"], frame["event"], frame["data"]))
        assert got == want

        # Unsubscribed from A, the socket carries none of A's events, though A goes on to end.
        send(ws, "unsubscribe", a)
        assert client.http.post(f"/conversations/{a}/stop").json() == {"stopping": True}
        resumed = client.events(
            "GET", f"/conversations/{a}/stream", headers={"Last-Event-ID": posted[a][-1].id}
        )
        assert resumed[-1].event == "done"
        assert resumed[-1].data["message"]["status"] == "stopped"
        # B is still followed: stopped over the socket, its `done` and then its `end` arrive.
        send(ws, "stop", b)
        frames = [recv(ws)]
        while frames[-1]["event"] != "end":
            frames.append(recv(ws))
        assert {f["conversation_id"] for f in frames} == {b}
        done, end = frames[-2:]
        assert done["event"] == "done" and done["data"]["message"]["status"] == "stopped"
        assert end == {"id": None, "event": "end", "data": {}, "conversation_id": b}

        # The socket still serves: A's answer is replayed from the log on a new subscribe.
        send(ws, "subscribe", a, last_event_id=posted[a][-1].id)
        replay = [recv(ws)]
        while replay[-1]["event"] != "end":
            replay.append(recv(ws))
        assert [(f["id"], f["event"]) for f in replay[:-1]] == [(e.id, e.event) for e in resumed]


def test_a_subscription_ends_or_is_refused_per_conversation(
    client: Client, chat_server: str
) -> None:
    client.signup("Ned")
    idle = client.new_conversation()["id"]
    with open_socket(chat_server, client) as ws:
        # Nothing runs: the subscription ends at once, as an SSE reply's body would.
        send(ws, "subscribe", idle)
        assert recv(ws) == {"id": None, "event": "end", "data": {}, "conversation_id": idle}
        # A bad event id is the 400 the SSE route gives, named by its conversation.
        send(ws, "subscribe", idle, last_event_id="not-an-id")
        frame = recv(ws)
        assert (frame["id"], frame["event"], frame["conversation_id"]) == (None, "error", idle)
        assert frame["data"]["status"] == 400 and "not an event id" in frame["data"]["error"]
        # Unsubscribing what is not subscribed (or not there at all) is not an error.
        send(ws, "unsubscribe", idle)
        send(ws, "unsubscribe", "00000000-0000-0000-0000-000000000000")
        missing = "00000000-0000-0000-0000-000000000001"
        send(ws, "subscribe", missing)
        frame = recv(ws)
        assert frame["data"] == {"error": "no such conversation", "status": 404,
                                 "conversation_id": missing}  # fmt: skip
