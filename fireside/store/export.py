"""A user's whole data, for their own export: conversations, and files with their bytes."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Conversation, File, Message, MessageFile


async def user_data(
    db: AsyncSession, user_id: uuid.UUID
) -> list[tuple[Conversation, list[Message]]]:
    conversations = list(
        await db.scalars(
            select(Conversation)
            .where(Conversation.user_id == user_id, Conversation.temporary.is_(False))
            .order_by(Conversation.created_at)
        )
    )
    messages = await db.scalars(
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.user_id == user_id, Conversation.temporary.is_(False))
        .order_by(Message.created_at)
    )
    by_conversation: dict[uuid.UUID, list[Message]] = defaultdict(list)
    for m in messages:
        by_conversation[m.conversation_id].append(m)
    return [(c, by_conversation[c.id]) for c in conversations]


async def user_files(db: AsyncSession, user_id: uuid.UUID) -> list[tuple[File, list[uuid.UUID]]]:
    """The user's files (none of a temporary chat's), oldest first, each with the messages
    that attached it."""
    temporary = select(Conversation.id).where(
        Conversation.user_id == user_id, Conversation.temporary.is_(True)
    )
    files = list(
        await db.scalars(
            select(File)
            .where(
                File.user_id == user_id,
                or_(File.conversation_id.is_(None), File.conversation_id.not_in(temporary)),
            )
            .order_by(File.created_at, File.id)
        )
    )
    links = await db.execute(
        select(MessageFile.file_id, MessageFile.message_id)
        .join(File, File.id == MessageFile.file_id)
        .where(File.user_id == user_id)
    )
    by_file: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for file_id, message_id in links:
        by_file[file_id].append(message_id)
    return [(f, by_file[f.id]) for f in files]
