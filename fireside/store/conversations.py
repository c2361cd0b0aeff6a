"""Conversations and their message trees: the SQL behind them.

Every query is scoped to the owner: a conversation or message of someone else is simply
not found, so callers answer 404 and ids of others' data reveal nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, delete, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Conversation, Message, now


def aware(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


async def add_conversation(db: AsyncSession, user_id: uuid.UUID, **fields: Any) -> Conversation:
    conversation = Conversation(user_id=user_id, **fields)
    db.add(conversation)
    await db.flush()
    return conversation


async def owned_conversation(
    db: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation | None:
    found: Conversation | None = await db.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id, Conversation.user_id == user_id
        )
    )
    return found


async def list_conversations(
    db: AsyncSession,
    user_id: uuid.UUID,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
    archived: bool,
    project_id: uuid.UUID | None = None,
) -> list[Conversation]:
    """Newest activity first; `before` is the (updated_at, id) of the last row of the
    previous page (keyset pagination: stable while rows are added, no OFFSET scans).
    With `project_id`, only that project's."""
    query = select(Conversation).where(
        Conversation.user_id == user_id,
        Conversation.archived == archived,
        Conversation.temporary.is_(False),
    )
    if project_id is not None:
        query = query.where(Conversation.project_id == project_id)
    if before is not None:
        at, id_ = before
        query = query.where(
            or_(
                Conversation.updated_at < at,
                and_(Conversation.updated_at == at, Conversation.id < id_),
            )
        )
    query = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(limit)
    return list(await db.scalars(query))


async def delete_conversation(db: AsyncSession, conversation: Conversation) -> None:
    # Messages go with it (ON DELETE CASCADE); one statement, one transaction.
    await db.execute(delete(Message).where(Message.conversation_id == conversation.id))
    await db.delete(conversation)


async def delete_temporary_before(db: AsyncSession, cutoff: datetime) -> list[uuid.UUID]:
    """Deletes the temporary conversations begun before `cutoff` with their messages, in the
    caller's transaction; their ids, so that answers still running can be stopped first."""
    ids = list(
        await db.scalars(
            select(Conversation.id).where(
                Conversation.temporary.is_(True), Conversation.created_at < cutoff
            )
        )
    )
    if ids:
        await db.execute(delete(Message).where(Message.conversation_id.in_(ids)))
        await db.execute(delete(Conversation).where(Conversation.id.in_(ids)))
    return ids


async def touch(
    db: AsyncSession, conversation_id: uuid.UUID, default_title: str | None = None, **fields: Any
) -> None:
    """Bumps updated_at (and sets `fields`); `default_title` becomes the title only where the
    conversation has none, in the same statement."""
    if default_title is not None:
        fields["title"] = case(
            # Bound with the column's type, which makes it storable (NUL) as a plain value is.
            (
                or_(Conversation.title.is_(None), Conversation.title == ""),
                literal(default_title, Conversation.title.type),
            ),
            else_=Conversation.title,
        )
    await db.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(updated_at=now(), **fields)
    )


async def add_message(
    db: AsyncSession,
    conversation_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    role: str,
    content: str,
    *,
    flush: bool = True,
    **fields: Any,
) -> Message:
    """A new message; with flush=False it is written with the transaction's next statement
    (its id is set here, so a child can name it as parent before then)."""
    message = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        parent_id=parent_id,
        role=role,
        content=content,
        **fields,
    )
    db.add(message)
    if flush:
        await db.flush()
    return message


async def owned_message(
    db: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[Message, Conversation] | None:
    row = (
        await db.execute(
            select(Message, Conversation)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.id == message_id, Conversation.user_id == user_id)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def message_in(
    db: AsyncSession, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    found: Message | None = await db.scalar(
        select(Message).where(Message.id == message_id, Message.conversation_id == conversation_id)
    )
    return found


async def branch(
    db: AsyncSession, leaf_id: uuid.UUID | None, limit: int = 100_000
) -> list[Message]:
    """The path from the root to `leaf_id` (its last `limit` messages), read by walking parent
    ids up from the leaf in one recursive query: other branches, and the part of this one
    above the page, are never loaded."""
    if leaf_id is None:
        return []
    path = (
        select(Message.id, Message.parent_id, literal(0).label("depth"))
        .where(Message.id == leaf_id)
        .cte("path", recursive=True)
    )
    path = path.union_all(
        select(Message.id, Message.parent_id, (path.c.depth + 1).label("depth"))
        .join(path, Message.id == path.c.parent_id)
        .where(path.c.depth < limit - 1)
    )
    rows = await db.scalars(
        select(Message).join(path, Message.id == path.c.id).order_by(path.c.depth.desc())
    )
    return list(rows)


async def sibling_ids(
    db: AsyncSession, conversation_id: uuid.UUID, messages: Iterable[Message]
) -> dict[uuid.UUID | None, list[uuid.UUID]]:
    """The children of each parent of `messages` (None: the conversation's roots), oldest
    first, in one query for the whole page: what a client needs to show "2/3" beside a
    message whose siblings are on branches it has not loaded."""
    parents = {m.parent_id for m in messages}
    if not parents:
        return {}
    ids = [p for p in parents if p is not None]
    wanted = [Message.parent_id.in_(ids)] if ids else []
    if None in parents:
        wanted.append(Message.parent_id.is_(None))
    rows = await db.execute(
        select(Message.id, Message.parent_id)
        .where(Message.conversation_id == conversation_id, or_(*wanted))
        .order_by(Message.created_at, Message.id)
    )
    children: dict[uuid.UUID | None, list[uuid.UUID]] = {p: [] for p in parents}
    for message_id, parent_id in rows:
        children[parent_id].append(message_id)
    return children


async def streaming_message(db: AsyncSession, conversation_id: uuid.UUID) -> Message | None:
    found: Message | None = await db.scalar(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.status == "streaming")
        .order_by(Message.created_at.desc())
        .limit(1)
    )
    return found


async def streaming_workers(db: AsyncSession) -> set[str]:
    rows = await db.scalars(select(Message.worker).where(Message.status == "streaming").distinct())
    return {w or "" for w in rows}


async def interrupt_orphans(db: AsyncSession, live_workers: Iterable[str]) -> int:
    """Marks `interrupted` every generation left `streaming` by a process that is gone
    (killed, crashed, restarted); their partial text stays."""
    live = list(live_workers)
    query = update(Message).where(Message.status == "streaming")
    if live:
        query = query.where(or_(Message.worker.is_(None), Message.worker.not_in(live)))
    result = await db.execute(query.values(status="interrupted", updated_at=now()))
    return int(getattr(result, "rowcount", 0) or 0)


async def finish_message(
    db: AsyncSession, message_id: uuid.UUID, content: str, status: str, error: str | None = None
) -> None:
    await db.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(content=content, status=status, error=error, updated_at=now())
        # The generation's own short session holds no copy of the row to bring up to date;
        # skipping that pass saves the ORM's per-statement evaluation on the streaming path.
        .execution_options(synchronize_session=False)
    )


async def save_partial(db: AsyncSession, message_id: uuid.UUID, content: str) -> None:
    await db.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == "streaming")
        .values(content=content, updated_at=now())
        .execution_options(synchronize_session=False)  # as in finish_message
    )
