"""Finding 13: imports fed the training export. An imported answer rated up went into the SFT
export labelled with the model the file named, and a malformed imported `tool_calls` made the
admin's export fail with a 500. Imported messages are marked and never exported for
training; imported tool calls are checked (a 400 naming the message)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.app_utils import Backend, Client, make_admin

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    yield c
    c.close()


@pytest.fixture
def admin(chat_server: str, chat_backend: Backend) -> Iterator[Client]:
    c = Client(chat_server)
    assert c.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    yield c
    c.close()


def export_of(marker: str, answer: dict[str, Any]) -> dict[str, Any]:
    """Our own export format: one conversation, a question and an answer."""
    question_id = str(uuid.uuid4())
    at = "2026-01-02T03:04:05Z"
    return {
        "conversations": [
            {
                "title": marker,
                "created_at": at,
                "updated_at": at,
                "messages": [
                    {"id": question_id, "role": "user", "content": marker, "created_at": at},
                    {
                        "id": str(uuid.uuid4()),
                        "parent_id": question_id,
                        "role": "assistant",
                        "created_at": "2026-01-02T03:04:06Z",
                        **answer,
                    },
                ],
            }
        ]
    }


def test_an_imported_answer_rated_up_is_not_training_data(client: Client, admin: Client) -> None:
    client.signup("Wes")
    client.http.patch("/settings", json={"training_consent": True})
    marker = f"imported {uuid.uuid4().hex}"
    body = export_of(marker, {"content": "Paris, says a model I never ran.", "model": "gpt-4o"})
    made = client.http.post("/import", json=body)
    assert made.status_code == 201, made.text
    [conversation_id] = made.json()["conversation_ids"]
    tree = client.http.get(f"/conversations/{conversation_id}").json()["messages"]
    answer = tree[-1]
    assert (
        client.http.post(f"/messages/{answer['id']}/feedback", json={"rating": "up"}).status_code
        == 200
    )

    for fmt in ("sft", "dpo"):
        exported = admin.http.get("/admin/feedback/export", params={"format": fmt})
        assert exported.status_code == 200, exported.text
        assert marker not in exported.text and "gpt-4o" not in exported.text, fmt

    # A ChatGPT export too.
    gpt = [
        {
            "title": marker,
            "mapping": {
                "a": {"message": None, "parent": None, "children": ["b"]},
                "b": {
                    "message": {"author": {"role": "user"}, "content": {"parts": [marker]}},
                    "parent": "a",
                    "children": ["c"],
                },
                "c": {
                    "message": {
                        "author": {"role": "assistant"},
                        "content": {"parts": ["An answer ChatGPT wrote."]},
                    },
                    "parent": "b",
                    "children": [],
                },
            },
            "current_node": "c",
        }
    ]
    made = client.http.post("/import", json=gpt)
    assert made.status_code == 201, made.text
    [conversation_id] = made.json()["conversation_ids"]
    answer = client.http.get(f"/conversations/{conversation_id}").json()["messages"][-1]
    assert (
        client.http.post(f"/messages/{answer['id']}/feedback", json={"rating": "up"}).status_code
        == 200
    )
    sft = admin.http.get("/admin/feedback/export", params={"format": "sft"})
    assert sft.status_code == 200 and marker not in sft.text


@pytest.mark.parametrize(
    "calls",
    [
        [{"function": "not an object"}],
        [{"id": "call_1", "type": "function", "function": {"arguments": "{}"}}],  # no name
    ],
)
def test_malformed_imported_tool_calls_are_refused_naming_the_message(
    client: Client, admin: Client, calls: list[Any]
) -> None:
    client.signup("Xia")
    client.http.patch("/settings", json={"training_consent": True})
    # Well-formed calls import as they were.
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "calculator", "arguments": "{}"},
    }
    r = client.http.post("/import", json=export_of("ok", {"content": "", "tool_calls": [call]}))
    assert r.status_code == 201, r.text
    [conversation_id] = r.json()["conversation_ids"]
    answer = client.http.get(f"/conversations/{conversation_id}").json()["messages"][-1]
    assert answer["tool_calls"] == [call]

    marker = f"tools {uuid.uuid4().hex}"
    body = export_of(marker, {"content": "", "tool_calls": calls})
    r = client.http.post("/import", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "conversations.0.messages.1.tool_calls" in (error["param"] or ""), error
    assert "conversations.0.messages.1.tool_calls" in error["message"], error
    assert all(marker not in c["title"] for c in client.http.get("/conversations").json()["data"])
    assert admin.http.get("/admin/feedback/export", params={"format": "sft"}).status_code == 200
