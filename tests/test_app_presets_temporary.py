"""Temporary chats (out of every list, search and export; gone from the database once closed,
or a day after they began) and presets (saved system prompts, shared by administrators), on
both backends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import func, select, update

from fireside.app.state import ChatState
from fireside.app.temporary import sweep_temporary
from fireside.store.db import Database
from fireside.store.models import Conversation, Message, now
from tests.app_utils import Backend, Client, chat_settings, make_admin

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    yield c
    c.close()


async def _rows(backend: Backend, conversation_id: str) -> tuple[int, int]:
    """How many conversation and message rows the database holds for this id."""
    db = Database(chat_settings(backend).resolved_database_url())
    cid = uuid.UUID(conversation_id)
    async with db.session() as s:
        convs = await s.scalar(select(func.count()).where(Conversation.id == cid))
        msgs = await s.scalar(select(func.count()).where(Message.conversation_id == cid))
    await db.close()
    return int(convs or 0), int(msgs or 0)


def _not_anywhere(client: Client, conversation_id: str, word: str) -> None:
    listed = client.http.get("/conversations").json()["data"]
    assert conversation_id not in [c["id"] for c in listed]
    hits = client.http.get("/search", params={"q": word}).json()["data"]
    assert conversation_id not in [h["conversation_id"] for h in hits]
    exported = client.http.get("/export").json()["conversations"]
    assert conversation_id not in [c["id"] for c in exported]


def test_a_temporary_chat_leaves_no_trace_once_closed(
    client: Client, chat_server: str, chat_backend: Backend
) -> None:
    client.signup("Tess")
    assert client.http.patch("/settings", json={"training_consent": True}).status_code == 200
    kept = client.new_conversation()
    assert kept["temporary"] is False
    conv = client.new_conversation(temporary=True)
    assert conv["temporary"] is True
    word = f"zebra{uuid.uuid4().hex[:8]}"
    answer = client.send(conv["id"], f"secret {word}")[-1].data["message"]
    client.send(kept["id"], f"kept {word}")
    # While open: readable by its owner, yet in no list, search or export.
    assert client.http.get(f"/conversations/{conv['id']}").json()["temporary"] is True
    _not_anywhere(client, conv["id"], word)
    hits = client.http.get("/search", params={"q": word}).json()["data"]
    assert kept["id"] in [h["conversation_id"] for h in hits]
    # Nor is it training data, even rated by a consenting user.
    rating = {"rating": "up"}
    assert client.http.post(f"/messages/{answer['id']}/feedback", json=rating).status_code == 200
    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    sft = admin.http.get("/admin/feedback/export", params={"format": "sft"}).text
    assert word not in sft
    admin.close()
    assert asyncio.run(_rows(chat_backend, conv["id"]))[1] == 2
    # Closing it (the page's DELETE on leaving) removes every row.
    assert client.http.delete(f"/conversations/{conv['id']}").status_code == 204
    assert client.http.get(f"/conversations/{conv['id']}").status_code == 404
    assert asyncio.run(_rows(chat_backend, conv["id"])) == (0, 0)
    assert asyncio.run(_rows(chat_backend, kept["id"])) == (1, 2)


class _Stops:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def publish_stop(self, conversation_id: str) -> None:
        self.stopped.append(conversation_id)


async def _age_and_sweep(backend: Backend, ids: list[str]) -> tuple[int, list[str]]:
    """Sets these conversations' start back by 25 hours, then runs the sweep."""
    db = Database(chat_settings(backend).resolved_database_url())
    async with db.session() as s:
        await s.execute(
            update(Conversation)
            .where(Conversation.id.in_([uuid.UUID(i) for i in ids]))
            .values(created_at=now() - timedelta(hours=25))
        )
        await s.commit()
    stops = _Stops()
    chat = cast(ChatState, SimpleNamespace(db=db, broker=stops))
    deleted = await sweep_temporary(chat)
    await db.close()
    return deleted, stops.stopped


def test_the_sweep_deletes_temporary_chats_after_a_day(
    client: Client, chat_backend: Backend
) -> None:
    client.signup("Swe")
    old = client.new_conversation(temporary=True)
    client.send(old["id"], "forget me")
    young = client.new_conversation(temporary=True)
    old_kept = client.new_conversation()
    deleted, stopped = asyncio.run(_age_and_sweep(chat_backend, [old["id"], old_kept["id"]]))
    assert deleted >= 1 and old["id"] in stopped
    assert asyncio.run(_rows(chat_backend, old["id"])) == (0, 0)
    assert client.http.get(f"/conversations/{old['id']}").status_code == 404
    # A temporary chat younger than a day, and an old ordinary one, stay.
    assert client.http.get(f"/conversations/{young['id']}").status_code == 200
    assert client.http.get(f"/conversations/{old_kept['id']}").status_code == 200


def _preset(c: Client, **body: Any) -> httpx.Response:
    return c.http.post("/presets", json={"name": "Pirate", "system_prompt": "Arr.", **body})


def test_presets_crud_sharing_and_limits(
    client: Client, chat_server: str, chat_backend: Backend
) -> None:
    client.signup("Pia")
    r = _preset(client)
    assert r.status_code == 201, r.text
    mine = r.json()
    assert (mine["name"], mine["system_prompt"], mine["shared"], mine["mine"]) == (
        "Pirate",
        "Arr.",
        False,
        True,
    )
    assert _preset(client, shared=True).status_code == 403  # only admins publish
    for bad in (
        {"name": "", "system_prompt": "x"},
        {"name": "x" * 201, "system_prompt": "x"},
        {"name": "x", "system_prompt": "x" * 20_001},
        {"name": "x"},
        {"name": "x", "system_prompt": "x", "extra": 1},
    ):
        assert client.http.post("/presets", json=bad).status_code == 400, bad

    admin = Client(chat_server)
    assert admin.http.post("/auth/login", json=make_admin(chat_backend)).status_code == 200
    shared = admin.http.post(
        "/presets", json={"name": "House style", "system_prompt": "Be brief.", "shared": True}
    ).json()
    assert shared["shared"] is True
    private = admin.http.post("/presets", json={"name": "Mine", "system_prompt": "x"}).json()

    listed = client.http.get("/presets").json()
    ids = [p["id"] for p in listed["data"]]
    assert mine["id"] in ids and shared["id"] in ids and private["id"] not in ids
    assert [p["mine"] for p in listed["data"] if p["id"] == shared["id"]] == [False]
    # Pages: one at a time, each next_cursor continues where the last ended.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.http.get("/presets", params=params).json()
        seen += [p["id"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert client.http.get("/presets", params={"cursor": "junk!"}).status_code == 400

    # Another user's private preset is not found; a shared one is not the user's to delete.
    assert client.http.delete(f"/presets/{private['id']}").status_code == 404
    assert client.http.delete(f"/presets/{shared['id']}").status_code == 403
    assert admin.http.delete(f"/presets/{mine['id']}").status_code == 404
    assert client.http.delete(f"/presets/{mine['id']}").status_code == 204
    assert client.http.delete(f"/presets/{mine['id']}").status_code == 404
    assert admin.http.delete(f"/presets/{shared['id']}").status_code == 204
    assert shared["id"] not in [p["id"] for p in client.http.get("/presets").json()["data"]]
    admin.close()


def test_presets_need_a_login(chat_server: str) -> None:
    anonymous = httpx.Client(base_url=chat_server + "/api")
    assert anonymous.get("/presets").status_code == 401
    assert anonymous.post("/presets", json={"name": "a", "system_prompt": "b"}).status_code == 401
    anonymous.close()


async def _round_trip(url: str) -> tuple[set[str], set[str]]:
    """Migrates to head, back below 0010 and up again: the conversation columns and the tables
    at the end (after checking that going down removed what 0010 adds)."""
    from alembic import command
    from sqlalchemy import Connection, inspect

    from fireside.store.db import alembic_config

    def step(connection: Connection, target: str, down: bool) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, target)

    def shape(connection: Connection) -> tuple[set[str], set[str]]:
        found = inspect(connection)
        columns = {c["name"] for c in found.get_columns("conversations")}
        return columns, set(found.get_table_names())

    db = Database(url)
    await db.migrate()
    async with db.engine.connect() as conn:
        parent = _parent_of("0010")  # 0010's parent: "0007" now, "0009" after the merge
        await conn.run_sync(step, parent, True)
        columns_down, tables_down = await conn.run_sync(shape)
        await conn.run_sync(step, "head", False)
        columns_up, tables_up = await conn.run_sync(shape)
        await conn.commit()
    await db.close()
    assert "temporary" not in columns_down and "presets" not in tables_down
    return columns_up, tables_up


def _parent_of(revision: str) -> str:
    from alembic.script import ScriptDirectory

    from fireside.store.db import alembic_config

    found = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    assert found is not None and isinstance(found.down_revision, str)
    return found.down_revision


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_0010_goes_down_and_up(backend: str, tmp_path: Any) -> None:
    from tests.app_utils import postgres_database

    if backend == "sqlite":
        columns, tables = asyncio.run(_round_trip(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"))
    else:
        with postgres_database() as url:
            columns, tables = asyncio.run(_round_trip(url))
    assert "temporary" in columns and "presets" in tables
