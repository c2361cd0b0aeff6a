"""An import written a chunk of conversations at a time, with a cap on its size.

SQLite lets one writer in at a time: an 8 MiB import written in one transaction held the lock
for most of a minute, and every other user's write waited for it and then failed. Each chunk
(about CHUNK_MESSAGES messages) is one short transaction, taken in turn with the answers'
writes (Database.writing), so other users' writes go in between. The whole body is checked
before the first chunk is written; a chunk that fails keeps the chunks before it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import APIError
from fireside.app.chatgpt_import import GptConversation, import_conversations
from fireside.app.native_import import (
    FiresideExport,
    Plan,
    plan_export,
    write_extras,
    write_plans,
)
from fireside.store.db import Database

MAX_IMPORT_MESSAGES = 20_000  # in one import; more is a 413 (split the file)
CHUNK_MESSAGES = 500  # in one transaction
# Between chunks on SQLite: other requests' writes wait in SQLite's busy handler, which looks
# again every 100 ms at most; a chunk started at once after the last would take the lock
# before they look, every time.
SQLITE_PAUSE_S = 0.15

T = TypeVar("T")


def too_large(count: int) -> APIError:
    return APIError(
        f"the import holds {count} messages; at most {MAX_IMPORT_MESSAGES} go in one import: "
        "split the file",
        413,
        param="body",
        code="import_too_large",
    )


def chunks(items: Sequence[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive runs of items of about CHUNK_MESSAGES messages (at least one item each)."""
    run: list[T] = []
    total = 0
    for item in items:
        run.append(item)
        total += size(item)
        if total >= CHUNK_MESSAGES:
            yield run
            run, total = [], 0
    if run:
        yield run


async def _write(
    database: Database,
    db: AsyncSession,
    runs: Iterator[list[T]],
    write: Callable[[list[T]], Awaitable[list[uuid.UUID]]],
) -> list[uuid.UUID]:
    made: list[uuid.UUID] = []
    for i, run in enumerate(runs):
        if i and database.is_sqlite:
            await asyncio.sleep(SQLITE_PAUSE_S)
        async with database.writing():
            made += await write(run)
            await db.commit()
    return made


async def run_import(
    database: Database,
    db: AsyncSession,
    user_id: uuid.UUID,
    body: FiresideExport | list[GptConversation],
) -> list[uuid.UUID]:
    """ChatGPT's conversations.json or our own export into the user's account."""
    if isinstance(body, FiresideExport):
        plans = plan_export(body)
        count = sum(len(messages) for _, messages in plans)
        if count > MAX_IMPORT_MESSAGES:
            raise too_large(count)

        def plan_size(plan: Plan) -> int:
            return len(plan[1])

        # Projects, memory and presets first, in one transaction: the chats name the projects.
        async with database.writing():
            project_ids = await write_extras(db, user_id, body)
            await db.commit()

        async def write_native(run: list[Plan]) -> list[uuid.UUID]:
            return await write_plans(db, user_id, run, project_ids)

        return await _write(database, db, chunks(plans, plan_size), write_native)

    count = sum(len(c.mapping) for c in body)
    if count > MAX_IMPORT_MESSAGES:
        raise too_large(count)

    def gpt_size(item: GptConversation) -> int:
        return len(item.mapping)

    async def write_gpt(run: list[GptConversation]) -> list[uuid.UUID]:
        return await import_conversations(db, user_id, run)

    return await _write(database, db, chunks(body, gpt_size), write_gpt)
