"""Custom instructions and memory, on both backends: the settings round trip, memory facts'
CRUD and limits, and what reaches the prompt the engine is given. Instructions are copied into
a new conversation's system prompt (old chats keep theirs); memory facts are added to every
new answer's prompt while memory is on, and the answer says it used them (`memory_used`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fireside.app import memory, memory_tool
from tests.app_utils import Backend, Client, SSEEvent
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
    prompt = engine.prompts[0]  # the first generation (the random model may call a tool)
    for shown in ("Be kind.", "I keep bees.", "Rhyme.", memory.MEMORY_HEADING, "- My cat is Miso."):
        assert shown in prompt, shown
    assert prompt.index("Rhyme.") < prompt.index(memory.MEMORY_HEADING) < prompt.index("Hello")
    answer = events[-1].data["message"]
    assert answer["memory_used"] is True
    shown_later = client.http.get(f"/conversations/{old['id']}").json()["messages"]
    # The question did not use memory; every message of the answer did (a tool step included,
    # where the random model happens to call one).
    assert [(m["role"], m["memory_used"]) for m in shown_later[:2]] == [
        ("user", False),
        ("assistant", True),
    ]
    assert all(m["memory_used"] for m in shown_later if m["role"] == "assistant")

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
    prompt = engine.prompts[0]  # the first generation (the random model may call a tool)
    assert memory.MEMORY_HEADING not in prompt and "Miso" not in prompt
    assert events[-1].data["message"]["memory_used"] is False

    # Memory on, but the fact deleted: nothing to add either.
    client.http.patch("/settings", json={"memory_enabled": True})
    assert client.http.delete(f"/memory/{fact['id']}").status_code == 204
    engine.prompts.clear()
    events = client.send(fresh["id"], "And again")
    prompt = engine.prompts[0]  # the first generation (the random model may call a tool)
    assert "Miso" not in prompt
    assert events[-1].data["message"]["memory_used"] is False
    client.close()


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("Remember that my cat is called Miso.", "my cat is called Miso."),
        ("remember: the wifi password is on the fridge", "the wifi password is on the fridge"),
        ("Please remember I take my tea without sugar", "I take my tea without sugar"),
        ("Do you remember my cat?", None),
        ("Remember that?", None),
        ("Remember that", None),
        ("Remembering things is hard", None),
        ("I said remember that", None),
    ],
)
def test_which_questions_ask_to_remember(question: str, fact: str | None) -> None:
    assert memory_tool.wanted_fact(question) == fact


def memory_results(events: list[SSEEvent]) -> list[dict[str, Any]]:
    # Only the memory step's: the random model may call a tool of its own after it.
    return [e.data for e in events if e.event == "tool_result" and e.data["name"] == "memory"]


def test_remember_that_saves_a_fact_as_a_step_of_the_answer(
    tools_server: tuple[str, ScriptedToolEngine, Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Remember that …" saves the fact before the answer (which already has it in its prompt),
    shows the save as a `memory` step of the answer, and keeps the step out of later prompts."""
    url, engine, _ = tools_server
    client = Client(url)
    client.signup("Rem")
    chat = client.new_conversation()
    engine.prompts.clear()
    events = client.send(chat["id"], "Remember that my cat is called Miso.")

    [fact] = client.http.get("/memory").json()["data"]
    assert fact["content"] == "my cat is called Miso."
    [call] = [e.data for e in events if e.event == "tool_call" and e.data["name"] == "memory"]
    assert json.loads(call["arguments"]) == {"fact": "my cat is called Miso."}
    [result] = memory_results(events)
    assert result["content"] == "Saved to memory: my cat is called Miso."
    assert result["error"] is False and result["tool_call_id"] == call["id"]
    prompt = engine.prompts[0]  # the first generation: the save is the app's doing
    assert "- my cat is called Miso." in prompt
    answer = events[-1].data["message"]
    assert answer["memory_used"] is True
    branch = client.http.get(f"/conversations/{chat['id']}").json()["messages"]
    assert [m["role"] for m in branch[:3]] == ["user", "assistant", "tool"]
    assert branch[1]["tool_calls"][0]["function"]["name"] == "memory"

    # The next turn's prompt holds the fact (memory) but not the step the model never made.
    engine.prompts.clear()
    client.send(chat["id"], "What is my cat called?")
    prompt = engine.prompts[0]  # the first generation (the random model may call a tool)
    assert "Saved to memory" not in prompt and '"fact"' not in prompt
    assert prompt.count("my cat is called Miso.") == 2  # the memory block, and the question

    # Asked again: nothing new is stored. Undo (deleting the fact) takes it out of memory.
    events = client.send(chat["id"], "Remember that my cat is called Miso.")
    [result] = memory_results(events)
    assert result["content"].startswith("Already in memory")
    assert len(client.http.get("/memory").json()["data"]) == 1
    assert client.http.delete(f"/memory/{fact['id']}").status_code == 204

    # Memory off, or the fact too long: a failed step saying why, and nothing stored.
    client.http.patch("/settings", json={"memory_enabled": False})
    events = client.send(chat["id"], "Remember that I like figs.")
    [result] = memory_results(events)
    assert result["error"] is True and "memory is off" in result["content"]
    client.http.patch("/settings", json={"memory_enabled": True})
    monkeypatch.setattr(memory, "MAX_FACT", 10)  # the server runs in this process
    events = client.send(chat["id"], "Remember that I like figs and dates.")
    [result] = memory_results(events)
    assert result["error"] is True and "at most 10 characters" in result["content"]
    assert client.http.get("/memory").json()["data"] == []
    client.close()


def test_a_temporary_chat_neither_reads_nor_writes_memory(
    tools_server: tuple[str, ScriptedToolEngine, Backend],
) -> None:
    url, engine, _ = tools_server
    client = Client(url)
    client.signup("Tmp")
    client.http.post("/memory", json={"content": "My cat is Miso."})
    chat = client.new_conversation(temporary=True)
    engine.prompts.clear()
    events = client.send(chat["id"], "Remember that my dog is Rex.")
    assert memory_results(events) == []
    assert "Miso" not in engine.prompts[0]  # memory is not read either
    assert events[-1].data["message"]["memory_used"] is False
    assert [f["content"] for f in client.http.get("/memory").json()["data"]] == ["My cat is Miso."]
    client.close()
