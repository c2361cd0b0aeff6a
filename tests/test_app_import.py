"""POST /api/import: ChatGPT's conversations.json (a sample written by hand after the real
export: hidden context, an edited question, a regenerated answer, a tool call, an image),
and this server's own GET /api/export, on both backends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.app_utils import Client

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = Path(__file__).parent / "data" / "chatgpt_conversations.json"
JSON = {"content-type": "application/json"}


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    c.signup()
    yield c
    c.close()


def whole_tree(client: Client, conversation_id: str) -> dict[str, Any]:
    [found] = [
        c for c in client.http.get("/export").json()["conversations"] if c["id"] == conversation_id
    ]
    return dict(found)


def tree_shape(conversation: dict[str, Any]) -> list[Any]:
    """The tree without its ids: each message's fields and its children, in a fixed order."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for m in conversation["messages"]:
        children.setdefault(m["parent_id"], []).append(m)

    def shape(parent: str | None) -> list[Any]:
        kids = sorted(children.get(parent, []), key=lambda m: (m["created_at"], m["content"]))
        fields = ("role", "content", "status", "model", "tool_calls", "created_at")
        return [({k: m[k] for k in fields}, shape(m["id"])) for m in kids]

    return shape(None)


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_chatgpt_export_maps_onto_our_trees(client: Client) -> None:
    r = client.http.post("/import", content=SAMPLE.read_bytes(), headers=JSON)
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 2
    garden_id, powers_id = r.json()["conversation_ids"]

    garden = client.http.get(f"/conversations/{garden_id}").json()
    assert garden["title"] == "Planting tomatoes"
    assert datetime.fromisoformat(garden["created_at"]) == at(1714000000.123456)
    # The branch on show ends at current_node: the edited question and its regenerated answer.
    # The hidden system message and custom instructions are not messages of ours.
    assert [(m["role"], m["content"]) for m in garden["messages"]] == [
        ("user", "When should I plant tomatoes?"),
        ("assistant", "After the last frost, when nights stay above 10 °C."),
        ("user", "And peppers, in pots on a balcony?"),
        ("assistant", "Use pots of at least 10 litres and\n water daily in summer."),
    ]
    assert garden["messages"][0]["parent_id"] is None
    assert datetime.fromisoformat(garden["messages"][0]["created_at"]) == at(1714000001.123456)
    assert all(m["status"] == "complete" for m in garden["messages"])
    # The other branches are kept: the first version of the question with its answer, and the
    # answer that was regenerated.
    tree = tree_shape(whole_tree(client, garden_id))
    [(q1, [(a1, [(q2, [(a2, [])]), (q2e, [(a3, []), (a3r, [])])])])] = tree
    assert (q1["role"], a1["role"]) == ("user", "assistant")
    assert (q2["content"], a2["content"]) == (
        "And peppers?",
        "Peppers like it warmer: wait two more weeks.",
    )
    assert q2e["content"] == "And peppers, in pots on a balcony?"
    assert [a3["content"], a3r["content"]] == [
        "Yes: a 10 litre pot each, full sun.",
        "Use pots of at least 10 litres and\n water daily in summer.",
    ]

    # A tool call (code to "python") and its output are ChatGPT's own: skipped; the image is
    # not in the file, its message's text is.
    powers = client.http.get(f"/conversations/{powers_id}").json()
    assert [(m["role"], m["content"]) for m in powers["messages"]] == [
        ("user", "What is 2**20? And what is in this photo?"),
        ("assistant", "2**20 is 1048576. The photo shows a tomato plant."),
    ]
    # An imported chat is a chat like any other: it goes on from the branch on show.
    events = client.send(powers_id, "Thanks")
    assert events[0].data["parent_id"] == powers["messages"][-1]["id"]
    assert events[-1].event == "done"


def test_our_own_export_imports_into_another_account(client: Client, chat_server: str) -> None:
    client.http.post("/import", content=SAMPLE.read_bytes(), headers=JSON)
    chat = client.new_conversation(title="Mine", system_prompt="Be brief.", temperature=0.5)
    first = client.send(chat["id"], "Hello")[-1].data["message"]
    client.events("POST", f"/messages/{first['id']}/regenerate")
    client.http.patch(f"/conversations/{chat['id']}", json={"pinned": True})
    exported = client.http.get("/export").json()
    mine = {c["title"]: c for c in exported["conversations"]}

    other = Client(chat_server)
    other.signup("Other")
    r = other.http.post("/import", json=exported)
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == len(exported["conversations"]) == 3
    copies = {c["title"]: c for c in other.http.get("/export").json()["conversations"]}
    assert copies.keys() == mine.keys()
    for title, original in mine.items():
        copy = copies[title]
        assert copy["id"] != original["id"]  # new ids: nothing of the first account is reused
        assert tree_shape(copy) == tree_shape(original), title
        for field in ("system_prompt", "temperature", "pinned", "archived", "created_at"):
            assert copy[field] == original[field], (title, field)
        # The branch on show is the same branch.
        shown = other.http.get(f"/conversations/{copy['id']}").json()["messages"]
        was = client.http.get(f"/conversations/{original['id']}").json()["messages"]
        assert [m["content"] for m in shown] == [m["content"] for m in was]
    # The copy belongs to the importer alone.
    copy_id = copies["Mine"]["id"]
    assert client.http.get(f"/conversations/{copy_id}").status_code == 404
    other.close()


def test_projects_memory_and_presets_travel_with_the_export(
    client: Client, chat_server: str
) -> None:
    project = client.http.post("/projects", json={"name": "Bees", "instructions": "Hum."}).json()
    chat = client.new_conversation(title="Hive", project_id=project["id"])
    client.new_conversation(title="Loose")
    client.http.post("/memory", json={"content": "I keep bees."})
    client.http.post("/presets", json={"name": "Terse", "system_prompt": "Be terse."})
    exported = client.http.get("/export").json()
    assert [p["name"] for p in exported["projects"]] == ["Bees"]
    assert [f["content"] for f in exported["memory"]] == ["I keep bees."]
    assert exported["presets"] == [{"name": "Terse", "system_prompt": "Be terse."}]

    other = Client(chat_server)
    other.signup("Importer")
    other.http.post("/memory", json={"content": "I keep bees."})  # already known: not doubled
    r = other.http.post("/import", json=exported)
    assert r.status_code == 201, r.text
    [copy] = other.http.get("/projects").json()["data"]
    assert (copy["name"], copy["instructions"]) == ("Bees", "Hum.") and copy["id"] != project["id"]
    chats = {c["title"]: c for c in other.http.get("/export").json()["conversations"]}
    assert chats["Hive"]["project_id"] == copy["id"] and chats["Loose"]["project_id"] is None
    assert chats["Hive"]["id"] != chat["id"]
    assert [f["content"] for f in other.http.get("/memory").json()["data"]] == ["I keep bees."]
    [preset] = [p for p in other.http.get("/presets").json()["data"] if p["mine"]]
    assert (preset["name"], preset["shared"]) == ("Terse", False)

    # A chat naming a project the export does not have is refused, and nothing is written.
    exported["conversations"][0]["project_id"] = str(uuid.uuid4())
    r = other.http.post("/import", json=exported)
    assert r.status_code == 400 and "project_id" in r.json()["error"]["message"], r.text
    assert len(other.http.get("/projects").json()["data"]) == 1
    other.close()


def test_malformed_imports_are_refused_with_a_reason(client: Client) -> None:
    def message(id_: str, parent: str | None, **fields: Any) -> dict[str, Any]:
        return {"id": id_, "parent_id": parent, "role": "user", "content": "hi",
                "created_at": "2026-01-01T00:00:00Z", **fields}  # fmt: skip

    def export(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
        conversation = {"title": "t", "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z", "messages": list(messages), **fields}  # fmt: skip
        return {"conversations": [conversation]}

    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    before = len(client.http.get("/export").json()["conversations"])
    reasons = {
        "is not in this conversation": export(message(a, b)),
        "cycle": export(message(a, b), message(b, a)),
        "same id": export(message(a, None), message(a, None)),
        "current_leaf_id": export(message(a, None), current_leaf_id=b),
    }
    for reason, body in reasons.items():
        r = client.http.post("/import", json=body)
        assert r.status_code == 400, (reason, r.text)
        assert reason in r.json()["error"]["message"], r.text
    malformed: list[Any] = [
        "conversations",
        5,
        None,
        {"conversations": "all of them"},
        export(message("not-a-uuid", None)),
        export(message(a, None, role="wizard")),
        export(message(a, None, content=7)),
        [{"title": "no mapping"}],
        [{"mapping": {"n": {"message": {"author": {"role": "user"}, "content": 5}}}}],
    ]
    for bad in malformed:
        r = client.http.post("/import", json=bad)
        assert r.status_code == 400, (bad, r.text)
    r = client.http.post(
        "/import",
        content=b'[{"mapping": {"\xff": {}}}]',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    r = client.http.post("/import", content=json.dumps([]).encode()[:-1], headers=JSON)  # cut
    assert r.status_code == 400, r.text
    # Nothing of the refused imports was written.
    assert len(client.http.get("/export").json()["conversations"]) == before
