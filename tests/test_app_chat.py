"""The chat app's conversations and streams, on both backends (SQLite + in-process event log,
PostgreSQL + Redis): sending, resuming from Last-Event-ID, stopping, regenerating, editing,
the conversation list, and what a restart does to an answer cut by a crash."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.app_utils import HOLD, NUL_MARK, Client, SSEEvent, parse_sse

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    c.signup()
    yield c
    c.close()


def deltas(events: list[SSEEvent]) -> str:
    return "".join(e.data["text"] for e in events if e.event == "delta")


def check_ids_increase(events: list[SSEEvent]) -> None:
    ids = [e.id for e in events]
    keys = [tuple(int(p) for p in i.split("-")) for i in ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), ids


def done_message(events: list[SSEEvent]) -> dict[str, Any]:
    assert events[-1].event == "done", [e.event for e in events]
    return dict(events[-1].data["message"])


def test_send_stores_the_question_first_and_streams_the_answer(client: Client) -> None:
    conv = client.new_conversation()
    events = client.send(conv["id"], "What is DNS?")
    check_ids_increase(events)
    user, answer = events[0], events[1]
    assert (user.event, user.data["role"], user.data["content"]) == (
        "message",
        "user",
        "What is DNS?",
    )
    assert (answer.event, answer.data["role"], answer.data["status"]) == (
        "message",
        "assistant",
        "streaming",
    )
    assert answer.data["parent_id"] == user.data["id"]
    assert all(e.data["message_id"] == answer.data["id"] for e in events if e.event == "delta")
    final = done_message(events)
    assert final["status"] == "complete" and final["id"] == answer.data["id"]
    assert deltas(events) == final["content"] and final["content"]

    stored = client.http.get(f"/conversations/{conv['id']}").json()
    assert [m["id"] for m in stored["messages"]] == [user.data["id"], answer.data["id"]]
    assert stored["messages"][1]["content"] == final["content"]
    assert stored["messages"][1]["status"] == "complete"
    assert set(stored["messages"][0]) >= {
        "id",
        "parent_id",
        "role",
        "content",
        "status",
        "created_at",
    }
    assert stored["title"] == "What is DNS?"  # the first words, after the first exchange

    # The next message goes under the answer: the branch grows.
    second = client.send(conv["id"], "And HTTP?")
    assert second[0].data["parent_id"] == answer.data["id"]
    stored = client.http.get(f"/conversations/{conv['id']}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2


def test_resume_from_last_event_id_gives_every_event_once(client: Client) -> None:
    conv = client.new_conversation(max_tokens=24)
    first = client.events(
        "POST", f"/conversations/{conv['id']}/messages", limit=3, json={"content": "Tell me more"}
    )
    assert [e.event for e in first][:2] == ["message", "message"]
    # The client left after three events; the answer went on without it.
    rest = client.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": first[-1].id}
    )
    events = first + rest
    check_ids_increase(events)
    final = done_message(events)
    assert final["status"] == "complete"
    stored = client.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert deltas(events) == final["content"] == stored["content"]

    # The query parameter works as the header does; from the first event, all but it.
    again = client.events(
        "GET", f"/conversations/{conv['id']}/stream", params={"last_event_id": events[0].id}
    )
    assert [e.id for e in again] == [e.id for e in events[1:]]
    # After the end there is nothing more to send.
    assert (
        client.events(
            "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": events[-1].id}
        )
        == []
    )
    for bad in ("abc", "1-2-3", "x" * 500):
        r = client.http.get(f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": bad})
        assert r.status_code == 400, r.text


def test_stop_keeps_the_partial_answer(client: Client) -> None:
    conv = client.new_conversation(max_tokens=200)
    events: list[SSEEvent] = []
    path = f"/conversations/{conv['id']}/messages"
    with client.http.stream("POST", path, json={"content": f"{HOLD} go on"}) as r:
        from tests.app_utils import parse_sse

        for e in parse_sse(r.iter_lines()):
            events.append(e)
            if e.event == "delta":
                break  # the engine now holds the answer until it is stopped
    # A second message while one is being written is refused, not interleaved.
    busy = client.http.post(path, json={"content": "me too"})
    assert busy.status_code == 409, busy.text
    stop = client.http.post(f"/conversations/{conv['id']}/stop")
    assert stop.status_code == 200 and stop.json() == {"stopping": True}
    rest = client.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": events[-1].id}
    )
    final = done_message(events + rest)
    assert final["status"] == "stopped"
    assert final["content"] == deltas(events + rest) != ""
    stored = client.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
    assert (stored["status"], stored["content"]) == ("stopped", final["content"])


def test_sends_at_once_into_one_conversation_answer_once(client: Client) -> None:
    """Sends that race past the busy check: the one-streaming index lets one in (the others
    409), and the engine requests the losers began while their turns were written end."""
    conv = client.new_conversation(max_tokens=200)
    path = f"/conversations/{conv['id']}/messages"

    def send(i: int) -> tuple[int, list[SSEEvent]]:
        # HOLD: the winner's answer waits after one piece, so no send comes after it ends.
        with client.http.stream("POST", path, json={"content": f"{HOLD} {i}"}) as r:
            if r.status_code != 200:
                r.read()
                return r.status_code, []
            got = []
            for e in parse_sse(r.iter_lines()):
                got.append(e)
                if e.event == "delta":
                    return 200, got
        return 200, got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, range(4)))
    assert sorted(status for status, _ in results) == [200] + [409] * 3, results
    events = next(events for status, events in results if status == 200)
    assert client.http.post(f"/conversations/{conv['id']}/stop").json() == {"stopping": True}
    rest = client.events(
        "GET", f"/conversations/{conv['id']}/stream", headers={"Last-Event-ID": events[-1].id}
    )
    assert done_message(events + rest)["status"] == "stopped"
    stored = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    # Nothing of the losers is left: the next send is taken (a leftover `streaming` row would
    # answer 409). Its prompt holds HOLD too (the history): it is stopped.
    again = client.events("POST", path, limit=2, json={"content": "again"})
    assert [e.data["role"] for e in again] == ["user", "assistant"]
    assert client.http.post(f"/conversations/{conv['id']}/stop").json() == {"stopping": True}


def test_stream_without_an_id_follows_the_running_answer(client: Client) -> None:
    conv = client.new_conversation(max_tokens=200)
    path = f"/conversations/{conv['id']}/messages"
    with client.http.stream("POST", path, json={"content": f"{HOLD} wait"}) as r:
        from tests.app_utils import parse_sse

        for e in parse_sse(r.iter_lines()):
            if e.event == "delta":
                break
    # A reloaded page knows no event id: it gets the running answer from its start.
    with client.http.stream("GET", f"/conversations/{conv['id']}/stream") as r:
        from tests.app_utils import parse_sse

        seen: list[SSEEvent] = []
        for e in parse_sse(r.iter_lines()):
            seen.append(e)
            if e.event == "delta":
                client.http.post(f"/conversations/{conv['id']}/stop")
    assert [e.event for e in seen][:3] == ["message", "message", "delta"]
    assert done_message(seen)["status"] == "stopped"
    # With nothing running, there is nothing to follow.
    assert client.events("GET", f"/conversations/{conv['id']}/stream") == []


def test_regenerate_adds_a_sibling_and_edit_a_branch(client: Client) -> None:
    conv = client.new_conversation()
    first = client.send(conv["id"], "Name a colour")
    question, answer = first[0].data, done_message(first)

    again = client.events("POST", f"/messages/{answer['id']}/regenerate")
    # Only the new answer is announced: no new question.
    assert [e.data["role"] for e in again if e.event == "message"] == ["assistant"]
    sibling = done_message(again)
    assert sibling["id"] != answer["id"] and sibling["parent_id"] == question["id"]
    branch = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["id"] for m in branch] == [question["id"], sibling["id"]]

    # The first answer is still there: switching the branch on show brings it back.
    r = client.http.patch(f"/conversations/{conv['id']}", json={"current_leaf_id": answer["id"]})
    assert r.status_code == 200, r.text
    branch = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["id"] for m in branch] == [question["id"], answer["id"]]

    edited = client.events("PATCH", f"/messages/{question['id']}", json={"content": "Name a fruit"})
    new_question, new_answer = edited[0].data, done_message(edited)
    assert new_question["parent_id"] is None and new_question["content"] == "Name a fruit"
    assert new_answer["parent_id"] == new_question["id"]
    branch = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["id"] for m in branch] == [new_question["id"], new_answer["id"]]

    r = client.http.patch(f"/messages/{answer['id']}", json={"content": "x"})
    assert r.status_code == 400  # answers are regenerated, not edited


def test_each_message_of_the_branch_lists_its_siblings(client: Client) -> None:
    """sibling_ids: every message under the same parent in this conversation, oldest first,
    so a reloaded page, which holds one branch, still shows ‹ 2/3 › and can switch."""
    other = client.new_conversation()
    client.send(other["id"], "A root in another conversation")  # not a sibling of ours
    conv = client.new_conversation()
    first = client.send(conv["id"], "Name a colour")
    question, answer = first[0].data, done_message(first)
    second = done_message(client.events("POST", f"/messages/{answer['id']}/regenerate"))
    third = done_message(client.events("POST", f"/messages/{second['id']}/regenerate"))
    answers = [answer["id"], second["id"], third["id"]]

    branch = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["id"] for m in branch] == [question["id"], third["id"]]
    assert [m["sibling_ids"] for m in branch] == [[question["id"]], answers]

    # The branch through an older answer lists the same siblings, in the same order.
    client.http.patch(f"/conversations/{conv['id']}", json={"current_leaf_id": answer["id"]})
    branch = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["id"] for m in branch] == [question["id"], answer["id"]]
    assert branch[1]["sibling_ids"] == answers

    # An edited question is a second root: the roots are siblings, and the new answer is alone.
    edited = client.events("PATCH", f"/messages/{question['id']}", json={"content": "A fruit?"})
    new_question, new_answer = edited[0].data, done_message(edited)
    branch = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
    assert [m["sibling_ids"] for m in branch] == [
        [question["id"], new_question["id"]],
        [new_answer["id"]],
    ]
    # A page that starts below the root still carries the lists.
    page = client.http.get(f"/conversations/{conv['id']}", params={"limit": 1}).json()
    assert [m["sibling_ids"] for m in page["messages"]] == [[new_answer["id"]]]


def test_list_is_newest_first_with_cursor_pages(client: Client) -> None:
    made = [client.new_conversation(title=f"c{i}")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.http.get("/conversations", params=params).json()
        seen += [c["id"] for c in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1] and pages == 3
    assert client.http.get("/conversations", params={"cursor": "!!"}).status_code == 400

    # Archived conversations leave the list for the archive; deleted ones are gone.
    client.http.patch(f"/conversations/{made[0]}", json={"archived": True, "pinned": True})
    assert made[0] not in [c["id"] for c in client.http.get("/conversations").json()["data"]]
    archive = client.http.get("/conversations", params={"archived": True}).json()["data"]
    assert [c["id"] for c in archive] == [made[0]] and archive[0]["pinned"] is True
    assert client.http.delete(f"/conversations/{made[1]}").status_code == 204
    assert client.http.get(f"/conversations/{made[1]}").status_code == 404


def test_conversation_settings_reach_the_model(client: Client) -> None:
    conv = client.new_conversation(system_prompt="Be brief.", temperature=0, max_tokens=3)
    assert (conv["system_prompt"], conv["temperature"], conv["max_tokens"]) == ("Be brief.", 0, 3)
    one = done_message(client.send(conv["id"], "Hi"))
    two = done_message(client.events("POST", f"/messages/{one['id']}/regenerate"))
    assert one["content"] == two["content"]  # temperature 0: greedy, the same answer twice
    r = client.http.patch(f"/conversations/{conv['id']}", json={"model": "no-such-model"})
    assert r.status_code == 200
    r = client.http.post(f"/conversations/{conv['id']}/messages", json={"content": "Hi"})
    assert r.status_code == 400 and "no-such-model" in r.json()["error"]["message"]
    for bad in ({"temperature": 5}, {"max_tokens": 0}, {"title": None}, {"colour": "red"}):
        r = client.http.patch(f"/conversations/{conv['id']}", json=bad)
        assert r.status_code == 400, (bad, r.text)


def test_bad_messages_are_refused(client: Client) -> None:
    conv = client.new_conversation()
    path = f"/conversations/{conv['id']}/messages"
    for body in ({}, {"content": ""}, {"content": 5}, {"content": "x", "parent_id": "nope"}):
        assert client.http.post(path, json=body).status_code == 400, body
    r = client.http.post(path, json={"content": "x", "parent_id": str(uuid.uuid4())})
    assert r.status_code == 404
    r = client.http.post(path, content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_deleting_a_conversation_mid_answer(client: Client) -> None:
    from tests.app_utils import parse_sse

    conv = client.new_conversation(max_tokens=200)
    path = f"/conversations/{conv['id']}/messages"
    with client.http.stream("POST", path, json={"content": f"{HOLD} then delete"}) as r:
        for e in parse_sse(r.iter_lines()):
            if e.event == "delta":
                break
    assert client.http.delete(f"/conversations/{conv['id']}").status_code == 204
    assert client.http.get(f"/conversations/{conv['id']}").status_code == 404
    assert client.http.post(f"/conversations/{conv['id']}/stop").status_code == 404
    r = client.http.patch(f"/conversations/{conv['id']}", json={"current_leaf_id": None})
    assert r.status_code == 404


def test_nul_characters_are_stored_as_replacement_characters(client: Client) -> None:
    # PostgreSQL refuses U+0000 in text: a NUL in a user's message, a title or a model's answer
    # is stored (and streamed) as U+FFFD on both backends, never a 500 or an unfinished answer.
    conv = client.new_conversation(title="a\x00title")
    assert conv["title"] == "a\ufffdtitle"
    events = client.send(conv["id"], f"{NUL_MARK} say\x00 it")
    assert events[0].data["content"] == f"{NUL_MARK} say\ufffd it"
    final = done_message(events)
    assert final["status"] == "complete"
    # Every piece the model made began with a NUL: each is streamed as it is stored.
    pieces = [e.data["text"] for e in events if e.event == "delta"]
    assert pieces and all(p.startswith("\ufffd") for p in pieces)
    assert "\x00" not in final["content"] and deltas(events) == final["content"]
    stored = client.http.get(f"/conversations/{conv['id']}").json()
    assert [m["content"] for m in stored["messages"]] == [
        f"{NUL_MARK} say\ufffd it",
        final["content"],
    ]
    assert stored["title"] == "a\ufffdtitle"
    # A title made from the first question holds the replacement character too.
    untitled = client.new_conversation()
    assert done_message(client.send(untitled["id"], "why\x00 not"))["status"] == "complete"
    stored = client.http.get(f"/conversations/{untitled['id']}").json()
    assert stored["title"] == "why\ufffd not"
    # A search cannot be for a NUL: refused as bad input.
    assert client.http.get("/search", params={"q": "say\x00"}).status_code == 400
