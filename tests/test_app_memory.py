"""Custom instructions and memory, on both backends: the settings round trip, memory facts'
CRUD and limits, and what reaches the prompt the engine is given. Instructions are copied into
a new conversation's system prompt (old chats keep theirs); memory facts are added to every
new answer's prompt while memory is on, and the answer says it used them (`memory_used`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fireside.app import memory
from tests.app_utils import Backend, Client
from tests.test_app_tools import ScriptedToolEngine, tools_model_dir, tools_server

__all__ = ["tools_model_dir", "tools_server"]  # fixtures, used by name

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    c.signup("Mem")
    yield c
    c.close()


def test_settings_round_trip_and_limits(client: Client) -> None:
    got = client.http.get("/settings").json()
    assert got == {
        "training_consent": False,
        "about_me": "",
        "response_style": "",
        "memory_enabled": True,
    }
    change = {"about_me": "I keep bees.", "response_style": "Briefly.", "memory_enabled": False}
    r = client.http.patch("/settings", json=change)
    assert r.status_code == 200, r.text
    assert r.json() == {"training_consent": False, **change}
    assert client.http.get("/settings").json() == {"training_consent": False, **change}
    # One field at a time leaves the others; "" clears.
    r = client.http.patch("/settings", json={"about_me": ""})
    assert r.json()["about_me"] == "" and r.json()["response_style"] == "Briefly."

    too_long = "x" * (memory.MAX_INSTRUCTIONS + 1)
    for name in ("about_me", "response_style"):
        r = client.http.patch("/settings", json={name: too_long})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == name
    assert client.http.get("/settings").json()["response_style"] == "Briefly."


def test_memory_facts_crud_and_limits(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.http.get("/memory").json() == {"data": [], "next_cursor": None}
    made = [client.http.post("/memory", json={"content": f"fact {i}"}) for i in range(2)]
    assert [r.status_code for r in made] == [201, 201]
    first, second = (r.json() for r in made)
    listed = client.http.get("/memory").json()["data"]
    assert [f["content"] for f in listed] == ["fact 0", "fact 1"]

    r = client.http.patch(f"/memory/{first['id']}", json={"content": "edited"})
    assert r.status_code == 200 and r.json()["content"] == "edited"
    assert client.http.delete(f"/memory/{second['id']}").status_code == 204
    assert client.http.delete(f"/memory/{second['id']}").status_code == 404
    assert [f["content"] for f in client.http.get("/memory").json()["data"]] == ["edited"]

    for bad in ({"content": ""}, {"content": "x" * (memory.MAX_FACT + 1)}, {}):
        assert client.http.post("/memory", json=bad).status_code == 400, bad
        assert client.http.patch(f"/memory/{first['id']}", json=bad).status_code == 400, bad
    monkeypatch.setattr(memory, "MAX_FACTS", 2)  # the server runs in this process
    assert client.http.post("/memory", json={"content": "two"}).status_code == 201
    r = client.http.post("/memory", json={"content": "three"})
    assert r.status_code == 400, r.text
    assert "at most 2 facts" in r.json()["error"]["message"]

    # Another user sees none of them, and cannot touch them.
    other = Client(client.url)
    other.signup("Other")
    assert other.http.get("/memory").json()["data"] == []
    assert other.http.patch(f"/memory/{first['id']}", json={"content": "x"}).status_code == 404
    assert other.http.delete(f"/memory/{first['id']}").status_code == 404
    other.close()


def test_instructions_and_memory_reach_the_prompt(
    tools_server: tuple[str, ScriptedToolEngine, Backend],
) -> None:
    url, engine, _ = tools_server
    client = Client(url)
    client.signup("Ann")
    client.http.patch("/settings", json={"about_me": "I keep bees.", "response_style": "Rhyme."})
    fact = client.http.post("/memory", json={"content": "My cat is Miso."}).json()

    # Instructions are copied into the new conversation, after its own system prompt.
    old = client.new_conversation(system_prompt="Be kind.")
    assert old["system_prompt"] == (
        "Be kind.\n\nAbout the user:\nI keep bees.\n\nHow the user wants you to answer:\nRhyme."
    )
    engine.prompts.clear()
    events = client.send(old["id"], "Hello")
    [prompt] = engine.prompts
    for shown in ("Be kind.", "I keep bees.", "Rhyme.", memory.MEMORY_HEADING, "- My cat is Miso."):
        assert shown in prompt, shown
    assert prompt.index("Rhyme.") < prompt.index(memory.MEMORY_HEADING) < prompt.index("Hello")
    answer = events[-1].data["message"]
    assert answer["memory_used"] is True
    shown_later = client.http.get(f"/conversations/{old['id']}").json()["messages"]
    assert [m["memory_used"] for m in shown_later] == [False, True]

    # Changed instructions reach new chats only; old ones keep what they began with.
    client.http.patch("/settings", json={"about_me": "", "response_style": ""})
    assert client.new_conversation()["system_prompt"] is None
    assert (
        client.http.get(f"/conversations/{old['id']}")
        .json()["system_prompt"]
        .startswith("Be kind.\n\nAbout the user:\nI keep bees.")
    )

    # Memory off: no facts in the prompt, and the answer says so.
    client.http.patch("/settings", json={"memory_enabled": False})
    engine.prompts.clear()
    fresh = client.new_conversation()
    events = client.send(fresh["id"], "Hi again")
    [prompt] = engine.prompts
    assert memory.MEMORY_HEADING not in prompt and "Miso" not in prompt
    assert events[-1].data["message"]["memory_used"] is False

    # Memory on, but the fact deleted: nothing to add either.
    client.http.patch("/settings", json={"memory_enabled": True})
    assert client.http.delete(f"/memory/{fact['id']}").status_code == 204
    engine.prompts.clear()
    events = client.send(fresh["id"], "And again")
    [prompt] = engine.prompts
    assert "Miso" not in prompt
    assert events[-1].data["message"]["memory_used"] is False
    client.close()
