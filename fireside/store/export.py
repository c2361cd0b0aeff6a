"""A user's whole data, for their own export."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Conversation, Message


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
