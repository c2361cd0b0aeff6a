"""Answers cut by a crash: at the next start-up they are marked `interrupted`, partial text
kept, on both backends; and a real server process killed with SIGKILL mid-answer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fireside.app.accounts import create_user
from fireside.settings import Settings
from fireside.store import conversations
from fireside.store.db import Database
from tests.app_utils import HOLD, Backend, Client, chat_settings, parse_sse, run_chat_server

pytestmark = pytest.mark.usefixtures("one_thread")


def test_startup_marks_orphaned_answers_interrupted(
    chat_backend: Backend, api_model_dir: Path, tmp_path: Path
) -> None:
    # SQLite: a database of this test's own; PostgreSQL: the session's, shared with a live
    # server whose own answers must not be touched (its worker is alive in Redis).
    settings = chat_settings(chat_backend, data_dir=tmp_path)
    email = f"crash-{os.getpid()}-{time.monotonic_ns()}@example.com"

    async def leave_an_orphan() -> tuple[str, str]:
        db = Database(settings.resolved_database_url())
        await db.migrate()
        async with db.session() as s:
            user = await create_user(s, email, "password1", "Crash", "open")
            conv = await conversations.add_conversation(s, user.id, title="t")
            question = await conversations.add_message(s, conv.id, None, "user", "Hi")
            answer = await conversations.add_message(
                s,
                conv.id,
                question.id,
                "assistant",
                "half an ans",
                status="streaming",
                worker="a-process-that-died",
            )
            await conversations.touch(s, conv.id, current_leaf_id=answer.id)
            await s.commit()
        await db.close()
        return str(conv.id), str(answer.id)

    conv_id, answer_id = asyncio.run(leave_an_orphan())
    with run_chat_server(api_model_dir, settings) as url:
        client = Client(url)
        r = client.http.post("/auth/login", json={"email": email, "password": "password1"})
        assert r.status_code == 200, r.text
        messages = client.http.get(f"/conversations/{conv_id}").json()["messages"]
        assert [(m["role"], m["status"], m["content"]) for m in messages] == [
            ("user", "complete", "Hi"),
            ("assistant", "interrupted", "half an ans"),
        ]
        assert messages[1]["id"] == answer_id
        # Nothing runs there now: a new message is accepted, the stream has nothing to follow.
        assert client.events("GET", f"/conversations/{conv_id}/stream") == []
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server_process(
    model_dir: Path, data_dir: Path, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A chat server in a process of its own (tests.app_server_main); its URL once ready."""
    port = _free_port()
    env = dict(os.environ, FIRESIDE_DATA_DIR=str(data_dir), FIRESIDE_APP_MAX_TOKENS="200")
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.app_server_main", str(model_dir), str(port)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server process exited")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server process did not become ready")


def wait_for_saved_text(client: Client, conversation_id: str) -> dict[str, Any]:
    """The answer as stored, once its first text is (a state to wait for, not a time)."""
    deadline = time.monotonic() + 60
    while True:
        last = client.http.get(f"/conversations/{conversation_id}").json()["messages"][-1]
        if last["content"] or time.monotonic() > deadline:
            return dict(last)
        time.sleep(0.05)


def test_sigkill_mid_answer_leaves_it_interrupted(api_model_dir: Path, tmp_path: Path) -> None:
    proc, url = start_server_process(api_model_dir, tmp_path)
    try:
        client = Client(url)
        me = client.signup("Kim")
        conv = client.new_conversation()
        path = f"/conversations/{conv['id']}/messages"
        text = ""
        with client.http.stream("POST", path, json={"content": f"{HOLD} and crash"}) as r:
            for e in parse_sse(r.iter_lines()):
                if e.event == "delta":
                    text = e.data["text"]
                    break
        # The first text is saved as soon as it is sent; the engine then holds the answer open.
        stored = wait_for_saved_text(client, conv["id"])
        assert (stored["status"], stored["content"]) == ("streaming", text)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        client.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # The next start-up on the same data directory (in this process: starting is the point).
    settings = Settings(data_dir=tmp_path, app_max_tokens=200)
    with run_chat_server(api_model_dir, settings) as url:
        client = Client(url)
        login = {"email": me["email"], "password": me["password"]}
        assert client.http.post("/auth/login", json=login).status_code == 200
        messages = client.http.get(f"/conversations/{conv['id']}").json()["messages"]
        assert [(m["role"], m["status"]) for m in messages] == [
            ("user", "complete"),
            ("assistant", "interrupted"),
        ]
        assert messages[0]["content"] == f"{HOLD} and crash" and messages[1]["content"] == text
        client.close()


def test_the_database_allows_one_answer_in_writing_per_conversation(
    chat_backend: Backend, tmp_path: Path
) -> None:
    from sqlalchemy.exc import IntegrityError

    settings = chat_settings(chat_backend, data_dir=tmp_path)

    async def scenario() -> None:
        db = Database(settings.resolved_database_url())
        await db.migrate()
        async with db.session() as s:
            user = await create_user(
                s, f"race-{time.monotonic_ns()}@example.com", "pw123456", "R", "open"
            )
            conv = await conversations.add_conversation(s, user.id)
            q = await conversations.add_message(s, conv.id, None, "user", "Hi")
            await conversations.add_message(s, conv.id, q.id, "assistant", "", status="streaming")
            await s.commit()
            cid, qid = conv.id, q.id  # a rollback expires the objects
            # Two sends racing past the route's check still cannot both start an answer.
            with pytest.raises(IntegrityError):
                await conversations.add_message(s, cid, qid, "assistant", "", status="streaming")
            await s.rollback()
            # Finished answers are not limited.
            for _ in range(2):
                await conversations.add_message(s, cid, qid, "assistant", "x")
            await s.commit()
        await db.close()

    asyncio.run(scenario())


def test_a_long_branch_opens_one_page_at_a_time(
    chat_backend: Backend, chat_server: str, tmp_path: Path
) -> None:
    settings = chat_settings(chat_backend)  # the running server's own database
    email = f"long-{time.monotonic_ns()}@example.com"

    async def long_chat() -> tuple[str, list[str]]:
        db = Database(settings.resolved_database_url())
        async with db.session() as s:
            user = await create_user(s, email, "password1", "Long", "open")
            conv = await conversations.add_conversation(s, user.id, title="long")
            ids, parent = [], None
            for i in range(250):
                m = await conversations.add_message(
                    s, conv.id, parent, "user" if i % 2 == 0 else "assistant", f"m{i}"
                )
                ids.append(str(m.id))
                parent = m.id
            await conversations.touch(s, conv.id, current_leaf_id=parent)
            await s.commit()
        await db.close()
        return str(conv.id), ids

    conv_id, ids = asyncio.run(long_chat())
    client = Client(chat_server)
    assert (
        client.http.post("/auth/login", json={"email": email, "password": "password1"}).status_code
        == 200
    )
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        params = {"limit": 100, **({"before": before} if before else {})}
        page = client.http.get(f"/conversations/{conv_id}", params=params).json()
        seen = [m["id"] for m in page["messages"]] + seen
        pages += 1
        before = page["messages_before"]
        if before is None:
            break
    assert seen == ids and pages == 3
    everything = client.http.get(f"/conversations/{conv_id}").json()
    assert [m["id"] for m in everything["messages"]] == ids and everything[
        "messages_before"
    ] is None
    assert client.http.get(f"/conversations/{conv_id}", params={"limit": 0}).status_code == 400
    client.close()
