"""Conversations and their message trees: the SQL behind them.

Every query is scoped to the owner: a conversation or message of someone else is simply
not found, so callers answer 404 and ids of others' data reveal nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.files import attach_files
from fireside.store.models import Conversation, Message, Usage, now


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


async def touch(db: AsyncSession, conversation_id: uuid.UUID, **fields: Any) -> None:
    """Bumps updated_at (and sets `fields`)."""
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


async def tree(db: AsyncSession, conversation_id: uuid.UUID, limit: int) -> list[Message]:
    """Every message of the conversation (its first `limit`), oldest first: each one's
    parent comes before it, so a client builds the tree in one pass."""
    rows = await db.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id)
        .limit(limit)
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


# --- the streaming path's writes, a batch at a time (fireside.store.group_commit) ---

# Core statements on the tables: executemany, without the ORM's per-row bookkeeping.
_messages = cast(Table, Message.__table__)
_conversations = cast(Table, Conversation.__table__)
_usage = cast(Table, Usage.__table__)


@dataclass(frozen=True)
class NewTurn:
    """A send's rows: the question (unless it answers a stored one) and the empty answer."""

    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None
    question: str | None
    model: str
    stream_after: str | None
    worker: str
    memory_used: bool
    # The question's files: what the message shows, and the files' ids (linked to it).
    attachments: list[dict[str, Any]] = field(default_factory=list)
    file_ids: list[uuid.UUID] = field(default_factory=list)


async def add_turns(db: AsyncSession, turns: list[NewTurn]) -> list[tuple[Message | None, Message]]:
    """The questions and `streaming` answers of several sends (questions first, so each kind
    is one executemany), and each conversation's new leaf."""
    questions = [
        Message(
            id=uuid.uuid4(),
            conversation_id=t.conversation_id,
            parent_id=t.parent_id,
            role="user",
            content=t.question,
            attachments=t.attachments or None,
        )
        if t.question is not None
        else None
        for t in turns
    ]
    answers = [
        Message(
            id=uuid.uuid4(),
            conversation_id=t.conversation_id,
            parent_id=q.id if q is not None else t.parent_id,
            role="assistant",
            content="",
            status="streaming",
            model=t.model,
            stream_after=t.stream_after,
            worker=t.worker,
            memory_used=t.memory_used,
        )
        for t, q in zip(turns, questions, strict=True)
    ]
    db.add_all([q for q in questions if q is not None])
    db.add_all(answers)
    await db.flush()
    for t, q in zip(turns, questions, strict=True):
        if q is not None and t.file_ids:
            await attach_files(db, q.id, t.conversation_id, t.file_ids)
    at = now()
    await db.execute(
        update(_conversations)
        .where(_conversations.c.id == bindparam("b_id"))
        .values(updated_at=bindparam("b_at"), current_leaf_id=bindparam("b_leaf")),
        [{"b_id": a.conversation_id, "b_at": at, "b_leaf": a.id} for a in answers],
    )
    return list(zip(questions, answers, strict=True))


async def save_partials(db: AsyncSession, texts: list[tuple[uuid.UUID, str]]) -> list[None]:
    """Answers' text so far (only while still `streaming`: a late save changes nothing)."""
    at = now()
    await db.execute(
        update(_messages)
        .where(_messages.c.id == bindparam("b_id"), _messages.c.status == "streaming")
        .values(content=bindparam("b_content"), updated_at=bindparam("b_at")),
        [{"b_id": id_, "b_content": text, "b_at": at} for id_, text in texts],
    )
    return [None] * len(texts)


@dataclass(frozen=True)
class FinishedAnswer:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    content: str
    status: str
    error: str | None
    title: str | None  # the conversation's title, where it has none yet
    usage: Usage | None  # the tokens it used, to add


async def finish_answers(db: AsyncSession, answers: list[FinishedAnswer]) -> list[None]:
    """Answers' final text and status, their conversations' updated_at (and titles where they
    have none: a title the user gave meanwhile stays), and their token usage."""
    at = now()
    await db.execute(
        update(_messages)
        .where(_messages.c.id == bindparam("b_id"))
        .values(
            content=bindparam("b_content"),
            status=bindparam("b_status"),
            error=bindparam("b_error"),
            updated_at=bindparam("b_at"),
        ),
        [
            {"b_id": a.message_id, "b_content": a.content, "b_status": a.status,
             "b_error": a.error, "b_at": at}
            for a in answers
        ],
    )  # fmt: skip
    touch = update(_conversations).where(_conversations.c.id == bindparam("b_id"))
    titled = [a for a in answers if a.title is not None]
    if titled:
        untitled = or_(_conversations.c.title.is_(None), _conversations.c.title == "")
        # Bound with the column's type, which makes it storable (NUL) as a plain value is.
        new = bindparam("b_title", type_=_conversations.c.title.type)
        title = case((untitled, new), else_=_conversations.c.title)
        await db.execute(
            touch.values(updated_at=bindparam("b_at"), title=title),
            [{"b_id": a.conversation_id, "b_at": at, "b_title": a.title} for a in titled],
        )
    rest = [a for a in answers if a.title is None]
    if rest:
        await db.execute(
            touch.values(updated_at=bindparam("b_at")),
            [{"b_id": a.conversation_id, "b_at": at} for a in rest],
        )
    usage = [a.usage for a in answers if a.usage is not None]
    if usage:
        await db.execute(
            insert(_usage),
            [
                {"user_id": u.user_id, "model": u.model, "prompt_tokens": u.prompt_tokens,
                 "completion_tokens": u.completion_tokens, "created_at": at}
                for u in usage
            ],
        )  # fmt: skip
    return [None] * len(answers)
