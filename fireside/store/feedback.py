"""Ratings of answers, and the rows the training export reads (consented users only, and
only answers this server wrote: an imported one may claim any model and say anything)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fireside.store.models import Conversation, Feedback, Message, User, now


async def rate(
    db: AsyncSession,
    user_id: uuid.UUID,
    message_id: uuid.UUID,
    rating: str,
    reason: str | None,
    comment: str | None,
) -> Feedback:
    """One rating per answer: rating again replaces it."""
    found = await db.get(Feedback, message_id)
    if found is None:
        found = Feedback(message_id=message_id, user_id=user_id)
        db.add(found)
    found.rating, found.reason, found.comment, found.created_at = rating, reason, comment, now()
    await db.flush()
    return found


async def user_feedback(
    db: AsyncSession, user_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[Feedback]:
    """The user's ratings, newest first; `before` is the (created_at, message_id) of the last
    row of the previous page (keyset pagination, as the conversation list)."""
    query = select(Feedback).where(Feedback.user_id == user_id)
    if before is not None:
        at, id_ = before
        query = query.where(
            or_(
                Feedback.created_at < at,
                and_(Feedback.created_at == at, Feedback.message_id < id_),
            )
        )
    query = query.order_by(Feedback.created_at.desc(), Feedback.message_id.desc()).limit(limit)
    return list(await db.scalars(query))


async def ratings_of(
    db: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Feedback]:
    """The ratings of these messages (those rated), in one query."""
    rows = await db.scalars(select(Feedback).where(Feedback.message_id.in_(message_ids)))
    return {f.message_id: f for f in rows}


async def rated_answers(db: AsyncSession) -> Sequence[tuple[Message, Feedback, Conversation]]:
    """Every rated answer of a user who consented to training, with its conversation."""
    rows = await db.execute(
        select(Message, Feedback, Conversation)
        .join(Feedback, Feedback.message_id == Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(User, User.id == Conversation.user_id)
        .where(
            User.training_consent.is_(True),
            Conversation.temporary.is_(False),  # a temporary chat is never training data
            Message.status == "complete",
            Message.imported.is_(False),
        )
        .order_by(Message.created_at)
    )
    return [(m, f, c) for m, f, c in rows.all()]


async def regenerated_questions(db: AsyncSession) -> Sequence[tuple[Message, Conversation]]:
    """Questions of consenting users answered more than once (regenerated): where a
    preference between answers can be read."""
    answer = aliased(Message)
    rows = await db.execute(
        select(Message, Conversation)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(User, User.id == Conversation.user_id)
        .join(answer, answer.parent_id == Message.id)
        .where(
            User.training_consent.is_(True),
            Conversation.temporary.is_(False),
            Message.role == "user",
            answer.role == "assistant",
            answer.status == "complete",
            answer.imported.is_(False),
        )
        .group_by(Message.id, Conversation.id)
        .having(func.count(answer.id) > 1)
        .order_by(Message.created_at)
    )
    return [(m, c) for m, c in rows.all()]


async def answers_under(
    db: AsyncSession, parent_ids: Sequence[uuid.UUID]
) -> Sequence[tuple[Message, Feedback | None, bool]]:
    """The complete answers under these messages, each with its rating if it has one and
    whether the conversation went on under it."""
    if not parent_ids:
        return []
    child = aliased(Message)
    continued = exists().where(child.parent_id == Message.id)
    rows = await db.execute(
        select(Message, Feedback, continued)
        .outerjoin(Feedback, Feedback.message_id == Message.id)
        .where(
            Message.parent_id.in_(parent_ids),
            Message.role == "assistant",
            Message.status == "complete",
            Message.imported.is_(False),
        )
        .order_by(Message.created_at)
    )
    return [(m, f, bool(c)) for m, f, c in rows.all()]
