"""Personal API keys, feedback and its export for training, share links and the admin
routes, on both backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fireside.model import Tokenizer
from fireside.train.chat_data import LengthReport, load_dpo_file, load_sft_file
from tests.api_utils import run_server
from tests.app_utils import Backend, Client, chat_settings, make_admin

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    c.signup()
    yield c
    c.close()


def test_personal_keys_are_shown_once_and_authorize_v1(client: Client, chat_server: str) -> None:
    made = client.http.post("/keys", json={"name": "laptop"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    listed = client.http.get("/keys").json()["data"]
    assert [k["name"] for k in listed] == ["laptop"] and "key" not in listed[0]
    assert key.startswith(listed[0]["prefix"])

    # FIRESIDE_AUTH=required: /v1/* wants a key, and a personal key is one.
    v1 = httpx.Client(base_url=chat_server, timeout=60)
    assert v1.get("/v1/models").status_code == 401
    assert v1.get("/v1/models", headers={"Authorization": "Bearer fs-nope"}).status_code == 401
    ok = v1.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "tiny"
    # ...and the chat API, in place of the cookie.
    me = v1.get("/api/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    used = client.http.get("/keys").json()["data"][0]
    assert used["last_used_at"] is not None

    other = Client(chat_server)
    other.signup("Other")
    assert other.http.delete(f"/keys/{listed[0]['id']}").status_code == 404
    other.close()
    assert client.http.delete(f"/keys/{listed[0]['id']}").status_code == 204
    assert v1.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.http.delete(f"/keys/{listed[0]['id']}").status_code == 404
    v1.close()


def test_feedback_becomes_dpo_and_sft_data(
    client: Client, chat_server: str, chat_backend: Backend, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    assert client.http.get("/settings").json()["training_consent"] is False
    r = client.http.patch("/settings", json={"training_consent": True})
    assert r.json()["training_consent"] is True
    conv = client.new_conversation(system_prompt="Answer in one word.", temperature=1.0)
    marker = f"Which colour? {conv['id']}"
    events = client.send(conv["id"], marker)
    first = events[-1].data["message"]
    second = first
    # A sampled answer may repeat; regenerate until the siblings differ.
    for _ in range(5):
        second = client.events("POST", f"/messages/{first['id']}/regenerate")[-1].data["message"]
        if second["content"] != first["content"]:
            break
    assert second["content"] != first["content"]
    up = {"rating": "up", "reason": "accurate", "comment": "good"}
    assert client.http.post(f"/messages/{first['id']}/feedback", json=up).status_code == 200
    down = {"rating": "down", "reason": "wrong"}
    assert client.http.post(f"/messages/{second['id']}/feedback", json=down).status_code == 200
    question = events[0].data["id"]
    r = client.http.post(f"/messages/{question}/feedback", json=up)
    assert r.status_code == 400  # questions are not rated
    for bad in ({"rating": "meh"}, {}, {"rating": "up", "comment": 5}):
        r = client.http.post(f"/messages/{first['id']}/feedback", json=bad)
        assert r.status_code == 400, bad

    assert client.http.get("/admin/feedback/export").status_code == 403
    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    dpo = admin.http.get("/admin/feedback/export", params={"format": "dpo"})
    assert dpo.status_code == 200
    mine = [json.loads(line) for line in dpo.text.splitlines() if marker in line]
    assert mine == [
        {
            "prompt": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": marker},
            ],
            "chosen": {"role": "assistant", "content": first["content"]},
            "rejected": {"role": "assistant", "content": second["content"]},
            "model": "tiny",
        }
    ]
    sft = admin.http.get("/admin/feedback/export", params={"format": "sft"})
    liked = [json.loads(line) for line in sft.text.splitlines() if marker in line]
    assert [m["messages"][-1]["content"] for m in liked] == [first["content"]]
    # What `fireside train dpo|sft` reads, it reads.
    (tmp_path / "dpo.jsonl").write_text(dpo.text)
    (tmp_path / "sft.jsonl").write_text(sft.text)
    assert len(load_dpo_file(tmp_path / "dpo.jsonl", tokenizer, 1024)) == dpo.text.count("\n")
    report = LengthReport()
    sft_lines = sft.text.count("\n")
    assert len(load_sft_file(tmp_path / "sft.jsonl", tokenizer, 1024, report)) == sft_lines

    # Without consent, nothing of this user is exported.
    client.http.patch("/settings", json={"training_consent": False})
    again = admin.http.get("/admin/feedback/export", params={"format": "dpo"}).text
    assert marker not in again
    assert admin.http.get("/admin/feedback/export", params={"format": "csv"}).status_code == 400
    admin.close()


def test_share_links_are_snapshots_and_revocable(client: Client, chat_server: str) -> None:
    conv = client.new_conversation(title="Shared")
    assert client.http.post(f"/conversations/{conv['id']}/share").status_code == 400  # empty
    events = client.send(conv["id"], "Share this")
    made = client.http.post(f"/conversations/{conv['id']}/share")
    assert made.status_code == 201
    token, url = made.json()["token"], made.json()["url"]
    client.send(conv["id"], "Not this")  # after the snapshot

    anyone = httpx.Client(base_url=chat_server, timeout=60)
    shared = anyone.get(url)
    assert shared.status_code == 200
    assert [m["content"] for m in shared.json()["messages"]] == [
        "Share this",
        events[-1].data["message"]["content"],
    ]
    assert anyone.get("/api/share/not-a-token").status_code == 404
    assert anyone.delete(f"/api/share/{token}").status_code == 401
    other = Client(chat_server)
    other.signup("Nosy")
    assert other.http.delete(f"/share/{token}").status_code == 404
    assert other.http.post(f"/conversations/{conv['id']}/share").status_code == 404
    other.close()
    assert client.http.delete(f"/share/{token}").status_code == 204
    assert anyone.get(url).status_code == 404
    anyone.close()


def test_admin_routes(client: Client, chat_server: str, chat_backend: Backend) -> None:
    me = client.http.get("/auth/me").json()
    for method, path in (
        ("GET", "/admin/users"),
        ("PATCH", f"/admin/users/{me['id']}"),
        ("GET", "/admin/usage"),
        ("GET", "/admin/feedback/export"),
        ("GET", "/admin/connections"),
        ("PUT", "/admin/connections"),
    ):
        r = client.http.request(method, path, json={} if method in ("PATCH", "PUT") else None)
        assert r.status_code == 403, (method, path)
        assert httpx.request(method, chat_server + "/api" + path).status_code == 401

    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    emails: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin.http.get("/admin/users", params=params).json()
        emails += [u["email"] for u in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert me["email"] in emails and emails == sorted(emails)

    client.send(client.new_conversation()["id"], "count my tokens")
    usage = admin.http.get("/admin/usage").json()["data"]
    mine = [u for u in usage if u["email"] == me["email"]]
    assert len(mine) == 1 and mine[0]["model"] == "tiny" and mine[0]["generations"] == 1
    assert mine[0]["prompt_tokens"] > 0 and 0 < mine[0]["completion_tokens"] <= 8

    r = admin.http.patch(f"/admin/users/{me['id']}", json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = admin.http.patch(f"/admin/users/{me['id']}", json={"role": "user", "status": "disabled"})
    assert r.json()["status"] == "disabled"
    assert client.http.get("/auth/me").status_code == 401  # disabled: logged out at once
    login = {"email": me["email"], "password": "secret-pass"}  # Client.signup's
    assert client.http.post("/auth/login", json=login).status_code == 403
    admin.http.patch(f"/admin/users/{me['id']}", json={"status": "active"})
    assert client.http.post("/auth/login", json=login).status_code == 200
    assert admin.http.patch(f"/admin/users/{me['id']}", json={"role": "boss"}).status_code == 400
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin.http.patch(f"/admin/users/{missing}", json={}).status_code == 404
    admin.close()


def test_search_finds_only_ones_own_messages(client: Client, chat_server: str) -> None:
    word = "zebra" + uuid.uuid4().hex[:8]  # a word no other test writes
    conv = client.new_conversation(title="Animals")
    client.send(conv["id"], f"Tell me about the {word} <b>now</b>")
    client.send(conv["id"], f"More on {word} please")
    other = client.new_conversation()
    client.send(other["id"], f"And {word} again")
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"q": word, "limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.http.get("/search", params=params)
        assert r.status_code == 200, r.text
        seen += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3 and len({h["message_id"] for h in seen}) == 3
    assert {h["conversation_id"] for h in seen} == {conv["id"], other["id"]}
    first = next(h for h in seen if "about" in h["snippet"])
    # The match is marked; the message's own markup never comes through as markup (SQLite
    # escapes it, PostgreSQL's parser drops tags).
    assert f"<mark>{word}</mark>" in first["snippet"] and "<b>" not in first["snippet"]
    assert first["title"] == "Animals" and first["role"] == "user"

    stranger = Client(chat_server)
    stranger.signup("Stranger")
    assert stranger.http.get("/search", params={"q": word}).json()["data"] == []
    stranger.close()
    for bad in ({"q": ""}, {"q": "   "}, {"q": word, "cursor": "x"}, {}):
        assert client.http.get("/search", params=bad).status_code == 400, bad
    # Query syntax is not the user's to trip over: operators and quotes are words.
    for odd in ('"', "AND OR NOT", "a*b", "(x", "NEAR("):
        assert client.http.get("/search", params={"q": odd}).status_code == 200, odd


def test_models_and_own_data_export(client: Client) -> None:
    models = client.http.get("/models").json()["data"]
    local = [m for m in models if m["source"] == "local"]
    assert local == [{"id": "tiny", "source": "local", "ready": True}]
    conv = client.new_conversation(title="Mine")
    events = client.send(conv["id"], "Keep this")
    answer = events[-1].data["message"]
    client.events("POST", f"/messages/{answer['id']}/regenerate")
    data = client.http.get("/export").json()
    assert data["user"]["email"] == client.http.get("/auth/me").json()["email"]
    [exported] = [c for c in data["conversations"] if c["id"] == conv["id"]]
    # The whole tree: the question and both answers, not only the branch on show.
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "assistant"]


def test_connected_endpoint_answers_in_conversations(
    client: Client, chat_server: str, chat_backend: Backend, api_model_dir: Path
) -> None:
    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    # Another Fireside serving the OpenAI API, with its own key.
    with run_server(api_model_dir, name="remote-tiny", api_key="remote-secret") as remote:
        put = {"data": [{"name": "far", "base_url": remote.base_url, "api_key": "remote-secret"}]}
        r = admin.http.put("/admin/connections", json=put)
        assert r.status_code == 200, r.text
        [shown] = r.json()["data"]
        assert shown["has_key"] is True and "remote-secret" not in r.text
        assert asyncio.run(stored_key(chat_backend, "far")) != b"remote-secret"

        ids = [m["id"] for m in client.http.get("/models").json()["data"]]
        assert ids[0] == "tiny" and "far/remote-tiny" in ids
        conv = client.new_conversation(model="far/remote-tiny", max_tokens=6, temperature=0)
        events = client.send(conv["id"], "Hello from afar")
        final = events[-1].data["message"]
        assert (final["status"], final["model"]) == ("complete", "far/remote-tiny")
        assert "".join(e.data["text"] for e in events if e.event == "delta") == final["content"]
        assert final["content"]

        # A wrong key: the answer ends in `error`, saying what the endpoint said.
        put["data"][0]["api_key"] = "wrong"
        assert admin.http.put("/admin/connections", json=put).status_code == 200
        events = client.send(conv["id"], "Again")
        assert [e.event for e in events][-2:] == ["error", "done"]
        assert "401" in events[-2].data["error"]
        assert events[-1].data["message"]["status"] == "error"

    for bad in (
        {"data": [{"name": "x y", "base_url": "http://a"}]},
        {"data": [{"name": "x", "base_url": "ftp://a"}]},
        {"data": [{"name": "x", "base_url": "http://a"}, {"name": "x", "base_url": "http://b"}]},
    ):
        assert admin.http.put("/admin/connections", json=bad).status_code == 400, bad
    assert admin.http.put("/admin/connections", json={"data": []}).json()["data"] == []
    r = client.http.post(f"/conversations/{conv['id']}/messages", json={"content": "x"})
    assert r.status_code == 400  # the connection is gone
    admin.close()


async def stored_key(backend: Backend, name: str) -> bytes | None:
    from fireside.store.connections import by_name
    from fireside.store.db import Database

    db = Database(chat_settings(backend).resolved_database_url())
    async with db.session() as s:
        found = await by_name(s, name)
    await db.close()
    return found.api_key_encrypted if found is not None else None


def chatgpt_export() -> list[dict[str, Any]]:
    """The shape of ChatGPT's conversations.json: a root node, a system turn, a question
    answered twice (a regeneration), and a follow-up on the second answer."""

    def node(
        id_: str, parent: str | None, children: list[str], role: str | None, text: str = ""
    ) -> dict[str, Any]:
        message = None
        if role is not None:
            message = {
                "author": {"role": role},
                "content": {"content_type": "text", "parts": [text]},
                "create_time": 1_700_000_000.0,
            }
        return {"id": id_, "parent": parent, "children": children, "message": message}

    mapping = {
        "root": node("root", None, ["sys"], None),
        "sys": node("sys", "root", ["q1"], "system", "You are ChatGPT"),
        "q1": node("q1", "sys", ["a1", "a2"], "user", "What is DNS?"),
        "a1": node("a1", "q1", [], "assistant", "Names to addresses."),
        "a2": node("a2", "q1", ["q2"], "assistant", "The internet's phone book."),
        "q2": node("q2", "a2", ["a3"], "user", "And HTTP?"),
        "a3": node("a3", "q2", [], "assistant", "Hypertext transfer."),
    }
    return [
        {
            "title": "Networking",
            "create_time": 1_700_000_000.0,
            "mapping": mapping,
            "current_node": "a3",
            "moderation_results": [],
        }
    ]


def test_import_of_a_chatgpt_export(client: Client) -> None:
    r = client.http.post("/import", json=chatgpt_export())
    assert r.status_code == 201, r.text
    [conv_id] = r.json()["conversation_ids"]
    conv = client.http.get(f"/conversations/{conv_id}").json()
    assert conv["title"] == "Networking"
    assert [(m["role"], m["content"]) for m in conv["messages"]] == [
        ("user", "What is DNS?"),
        ("assistant", "The internet's phone book."),
        ("user", "And HTTP?"),
        ("assistant", "Hypertext transfer."),
    ]
    assert conv["messages"][0]["parent_id"] is None  # the root and system nodes are skipped
    # The other answer is kept, beside the one on the branch.
    exported = client.http.get("/export").json()["conversations"]
    [tree] = [c for c in exported if c["id"] == conv_id]
    assert sorted(m["content"] for m in tree["messages"] if m["role"] == "assistant") == [
        "Hypertext transfer.",
        "Names to addresses.",
        "The internet's phone book.",
    ]
    # It is a conversation like any other: it can be continued.
    events = client.send(conv_id, "Thanks")
    assert events[0].data["parent_id"] == conv["messages"][-1]["id"]
    for bad in ({"not": "a list"}, [{"title": "x"}], [{"mapping": {"a": {"message": 5}}}]):
        assert client.http.post("/import", json=bad).status_code == 400, bad


def test_going_on_under_one_answer_prefers_it(
    client: Client, chat_server: str, chat_backend: Backend
) -> None:
    client.http.patch("/settings", json={"training_consent": True})
    conv = client.new_conversation(temperature=1.0)
    marker = f"Pick one {conv['id']}"
    first = client.send(conv["id"], marker)[-1].data["message"]
    second = first
    for _ in range(5):
        second = client.events("POST", f"/messages/{first['id']}/regenerate")[-1].data["message"]
        if second["content"] != first["content"]:
            break
    assert second["content"] != first["content"]
    # No rating: the user goes back to the first answer and chats on under it.
    client.http.patch(f"/conversations/{conv['id']}", json={"current_leaf_id": first["id"]})
    client.send(conv["id"], "Go on")
    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    dpo = admin.http.get("/admin/feedback/export", params={"format": "dpo"}).text
    mine = [json.loads(line) for line in dpo.splitlines() if marker in line]
    assert [(p["chosen"]["content"], p["rejected"]["content"]) for p in mine] == [
        (first["content"], second["content"])
    ]
    admin.close()


def test_signup_policy_set_by_the_admin(chat_server: str, chat_backend: Backend) -> None:
    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    assert admin.http.get("/admin/settings").json() == {"signup": "open"}
    try:
        r = admin.http.patch("/admin/settings", json={"signup": "approval"})
        assert r.json() == {"signup": "approval"}
        newcomer = Client(chat_server)
        body = {"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "password": "pw-123456"}
        r = newcomer.http.post("/auth/signup", json={**body, "name": "New"})
        # The same answer whether or not the email has an account (tests/security/
        # test_signup_enumeration.py): no id in it; the admin finds the account in the list.
        assert r.status_code == 202 and r.json()["status"] == "pending"
        assert newcomer.http.get("/auth/me").status_code == 401  # no session while pending
        assert newcomer.http.post("/auth/login", json=body).status_code == 403
        listed = admin.http.get("/admin/users", params={"cursor": body["email"][:-1], "limit": 1})
        [pending] = listed.json()["data"]
        assert (pending["email"], pending["status"]) == (body["email"], "pending")
        approved = admin.http.patch(f"/admin/users/{pending['id']}", json={"status": "active"})
        assert approved.json()["status"] == "active"
        assert newcomer.http.post("/auth/login", json=body).status_code == 200

        admin.http.patch("/admin/settings", json={"signup": "closed"})
        r = newcomer.http.post(
            "/auth/signup", json={"email": "late@example.com", "password": "pw-123456", "name": "L"}
        )
        assert r.status_code == 403
        assert newcomer.http.get("/admin/settings").status_code == 403
        assert admin.http.patch("/admin/settings", json={"signup": "maybe"}).status_code == 400
        newcomer.close()
    finally:
        admin.http.patch("/admin/settings", json={"signup": "open"})
        admin.close()
