"""Finding 18: share links could be neither listed nor revoked once their dialog closed, were
stored in plaintext, and their tokens were written to the access log.

Now: GET /api/shares lists the caller's links (another user's never), DELETE /api/shares/{id}
revokes one; the database keeps only the token's SHA-256 (existing rows are hashed by the
migration, and their links keep working); the access log shows /share/[redacted]."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from fireside.store.db import Database, alembic_config
from tests.app_utils import (
    Backend,
    Client,
    chat_settings,
    postgres_database,
    run_chat_server,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def client(chat_server: str) -> Iterator[Client]:
    c = Client(chat_server)
    yield c
    c.close()


def shared_conversation(client: Client) -> tuple[str, dict[str, str]]:
    conversation = client.new_conversation(title="Trip plans")
    client.send(conversation["id"], "where to go in May?")
    made = client.http.post(f"/conversations/{conversation['id']}/share")
    assert made.status_code == 201, made.text
    return conversation["id"], made.json()


def test_shares_are_listed_and_revoked_by_their_owner_alone(
    client: Client, chat_server: str
) -> None:
    client.signup("Sam")
    conversation_id, share = shared_conversation(client)
    other = Client(chat_server)
    other.signup("Tess")

    listed = client.http.get("/shares").json()["data"]
    assert [(s["id"], s["conversation_id"], s["title"]) for s in listed] == [
        (share["id"], conversation_id, "Trip plans")
    ]
    assert "token" not in listed[0]  # the server cannot give it back
    assert other.http.get("/shares").json()["data"] == []
    assert other.http.delete(f"/shares/{share['id']}").status_code == 404
    assert client.http.get(f"/share/{share['token']}").status_code == 200  # still open

    assert client.http.delete(f"/shares/{share['id']}").status_code == 204
    assert client.http.get(f"/share/{share['token']}").status_code == 404
    assert client.http.get("/shares").json()["data"] == []
    assert client.http.delete(f"/shares/{share['id']}").status_code == 404
    other.close()


def table_text(database_url: str, table: str) -> str:
    async def read() -> str:
        db = Database(database_url)
        try:
            async with db.engine.connect() as conn:
                rows = (await conn.execute(sa.text(f"SELECT * FROM {table}"))).all()
            return "\n".join(repr(tuple(r)) for r in rows)
        finally:
            await db.close()

    return asyncio.run(read())


def test_the_database_holds_no_token(
    client: Client, chat_server: str, chat_backend: Backend
) -> None:
    client.signup("Uri")
    _, share = shared_conversation(client)
    stored = table_text(chat_settings(chat_backend).resolved_database_url(), "shares")
    assert "Trip plans" in stored  # the row is there
    assert share["token"] not in stored


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path)
        return
    with postgres_database() as url:
        yield Backend("postgres", tmp_path, url)


def test_the_migration_hashes_existing_tokens_and_their_links_still_open(
    old_database: Backend, api_model_dir: Path
) -> None:
    settings = chat_settings(old_database, redis_url=None)
    url = settings.resolved_database_url()
    token = "plaintext-token-from-before-the-fix-0123456789"

    async def at_0005_with_a_share() -> None:
        db = Database(url)
        async with db.engine.connect() as conn:

            def upgrade(sync: sa.Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = sync
                command.upgrade(config, "0005")

            await conn.run_sync(upgrade)
            now = datetime.now(UTC)
            user, conversation = uuid.uuid4(), uuid.uuid4()
            users = sa.table(
                "users",
                *[sa.column(n, t) for n, t in [("id", sa.Uuid()), ("email", sa.String())]],
                sa.column("name"),
                sa.column("role"),
                sa.column("status"),
                sa.column("training_consent", sa.Boolean()),
                sa.column("created_at", sa.DateTime(timezone=True)),
            )
            await conn.execute(
                users.insert().values(
                    id=user,
                    email="old@example.com",
                    name="Old",
                    role="user",
                    status="active",
                    training_consent=False,
                    created_at=now,
                )
            )
            conversations = sa.table(
                "conversations",
                sa.column("id", sa.Uuid()),
                sa.column("user_id", sa.Uuid()),
                sa.column("title"),
                sa.column("pinned", sa.Boolean()),
                sa.column("archived", sa.Boolean()),
                sa.column("created_at", sa.DateTime(timezone=True)),
                sa.column("updated_at", sa.DateTime(timezone=True)),
            )
            await conn.execute(
                conversations.insert().values(
                    id=conversation,
                    user_id=user,
                    title="Old chat",
                    pinned=False,
                    archived=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            shares = sa.table(
                "shares",
                sa.column("token"),
                sa.column("conversation_id", sa.Uuid()),
                sa.column("user_id", sa.Uuid()),
                sa.column("title"),
                sa.column("messages", sa.JSON()),
                sa.column("created_at", sa.DateTime(timezone=True)),
            )
            await conn.execute(
                shares.insert().values(
                    token=token,
                    conversation_id=conversation,
                    user_id=user,
                    title="Old chat",
                    messages=[],
                    created_at=now,
                )
            )
            await conn.commit()
        await db.close()

    asyncio.run(at_0005_with_a_share())
    with run_chat_server(api_model_dir, settings) as server:  # migrates to the head
        anyone = Client(server)
        opened = anyone.http.get(f"/share/{token}")
        assert opened.status_code == 200, opened.text
        assert opened.json()["title"] == "Old chat"
        anyone.close()
    assert token not in table_text(url, "shares")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_access_log_has_no_token(client: Client, chat_server: str) -> None:
    client.signup("Val")
    _, share = shared_conversation(client)
    access = logging.getLogger("uvicorn.access")
    lines, level = Lines(), access.level
    access.addHandler(lines)
    access.setLevel(logging.INFO)  # the test servers log at WARNING; `fireside serve` at INFO
    try:
        client.http.get(f"{client.url}/share/{share['token']}")  # the page
        assert client.http.get(f"/share/{share['token']}?x=1").status_code == 200
        assert client.http.delete(f"/share/{share['token']}").status_code == 204
    finally:
        access.removeHandler(lines)
        access.setLevel(level)
    got = [line for line in lines.lines if "/share/" in line]
    assert len(got) >= 3, lines.lines
    assert not [line for line in got if share["token"] in line], got
