"""Group commit (fireside/store/group_commit.py) on both databases: writes that come together
share a transaction, each caller gets its own result or its own error, and the streaming
path's batch writes (answers started, partial texts, answers finished) do what one-by-one
writes did."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from fireside.store import conversations as store
from fireside.store.accounts import add_user
from fireside.store.db import Database
from fireside.store.group_commit import GroupCommit
from fireside.store.models import Conversation, Message, Usage
from tests.app_utils import postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    with postgres_database() as url:
        yield url


async def _setup(url: str, chats: int) -> tuple[Database, uuid.UUID, list[uuid.UUID]]:
    db = Database(url)
    await db.migrate()
    async with db.session() as s:
        user = await add_user(s, "a@example.com", "A", None, "user", "active")
        ids = [(await store.add_conversation(s, user.id)).id for _ in range(chats)]
        await s.commit()
    return db, user.id, ids


def _turn(conversation_id: uuid.UUID, question: str | None = "hi") -> store.NewTurn:
    return store.NewTurn(conversation_id, None, question, "m", "7", "worker", False)


def _count_commits(db: Database) -> list[int]:
    commits = [0]

    def on_commit(_conn: object) -> None:
        commits[0] += 1

    event.listen(db.engine.sync_engine, "commit", on_commit)
    return commits


def test_writes_that_come_together_share_a_transaction(database_url: str) -> None:
    async def scenario() -> None:
        db, user_id, ids = await _setup(database_url, 16)
        commits = _count_commits(db)
        writes = GroupCommit(db)
        turns = await asyncio.gather(*(writes.write(store.add_turns, _turn(c)) for c in ids))
        assert commits[0] == 1  # sixteen sends, one transaction
        async with db.session() as s:
            for cid, (question, answer) in zip(ids, turns, strict=True):
                assert question is not None and question.conversation_id == cid
                assert answer.parent_id == question.id and answer.status == "streaming"
                assert answer.created_at is not None  # what message_public reads
                conversation = await s.get(Conversation, cid)
                assert conversation is not None and conversation.current_leaf_id == answer.id
            stored = await s.scalars(select(Message).where(Message.conversation_id.in_(ids)))
            assert len(list(stored)) == 32

        # Partial saves and finishes of every answer: again one transaction each time.
        answers = [a for _, a in turns]
        await asyncio.gather(
            *(writes.write(store.save_partials, (a.id, f"part {i}")) for i, a in enumerate(answers))
        )
        assert commits[0] == 2
        await asyncio.gather(
            *(
                writes.write(
                    store.finish_answers,
                    store.FinishedAnswer(
                        a.id, a.conversation_id, f"whole {i}", "complete", None, f"title {i}",
                        Usage(user_id=user_id, model="m", prompt_tokens=3, completion_tokens=i),
                    ),
                )
                for i, a in enumerate(answers)
            )
        )  # fmt: skip
        assert commits[0] == 3
        async with db.session() as s:
            texts = await s.scalars(select(Message.content).where(Message.role == "assistant"))
            assert sorted(texts) == sorted(f"whole {i}" for i in range(16))
            assert len(list(await s.scalars(select(Usage)))) == 16
        await db.close()

    asyncio.run(scenario())


def test_one_failing_write_fails_alone(database_url: str) -> None:
    async def scenario() -> None:
        db, _, ids = await _setup(database_url, 3)
        writes = GroupCommit(db)
        # Two sends into the first conversation: the one-streaming index lets one in.
        results = await asyncio.gather(
            writes.write(store.add_turns, _turn(ids[0])),
            writes.write(store.add_turns, _turn(ids[0])),
            writes.write(store.add_turns, _turn(ids[1])),
            writes.write(store.add_turns, _turn(ids[2], question=None)),
            return_exceptions=True,
        )
        assert [isinstance(r, IntegrityError) for r in results] == [False, True, False, False]
        async with db.session() as s:
            streaming = list(await s.scalars(select(Message).where(Message.status == "streaming")))
            assert sorted(m.conversation_id for m in streaming) == sorted(ids)
            # An answer to a stored question writes no question of its own.
            roles = list(
                await s.scalars(select(Message.role).where(Message.conversation_id == ids[2]))
            )
            assert roles == ["assistant"]
        await db.close()

    asyncio.run(scenario())


def test_partial_saves_and_finishes(database_url: str) -> None:
    async def scenario() -> None:
        db, user_id, ids = await _setup(database_url, 2)
        async with db.session() as s:
            await store.touch(s, ids[1], title="Mine")  # a title the user gave
            await s.commit()
        writes = GroupCommit(db)
        (_, first), (_, second) = await asyncio.gather(
            *(writes.write(store.add_turns, _turn(c)) for c in ids)
        )
        await writes.write(store.save_partials, (first.id, "Hel"))
        usage = Usage(user_id=user_id, model="m", prompt_tokens=5, completion_tokens=2)
        await asyncio.gather(
            writes.write(
                store.finish_answers,
                store.FinishedAnswer(first.id, ids[0], "Hello", "complete", None, "Hi", usage),
            ),
            writes.write(
                store.finish_answers,
                store.FinishedAnswer(second.id, ids[1], "", "error", "it broke", "Hi", None),
            ),
        )
        # A save that lands after the finish changes nothing.
        await writes.write(store.save_partials, (first.id, "Hel"))
        async with db.session() as s:
            a, b = await s.get(Message, first.id), await s.get(Message, second.id)
            assert a is not None and (a.content, a.status, a.error) == ("Hello", "complete", None)
            assert b is not None and (b.content, b.status, b.error) == ("", "error", "it broke")
            titles = [(await s.get(Conversation, c)).title for c in ids]  # type: ignore[union-attr]
            assert titles == ["Hi", "Mine"]  # set only where there was none
            used = list(await s.scalars(select(Usage)))
            assert [(u.user_id, u.prompt_tokens, u.completion_tokens) for u in used] == [
                (user_id, 5, 2)
            ]
        await db.close()

    asyncio.run(scenario())
