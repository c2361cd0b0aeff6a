"""Share links (SQL). A link's token is random and shown once; only its SHA-256 is kept, so
the table (a backup, a read-only leak) opens no share."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Share


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def add_share(
    db: AsyncSession,
    token: str,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    title: str,
    messages: list[dict[str, Any]],
) -> Share:
    share = Share(
        token_hash=token_hash(token),
        conversation_id=conversation_id,
        user_id=user_id,
        title=title,
        messages=messages,
    )
    db.add(share)
    await db.flush()
    return share


async def share_by_token(db: AsyncSession, token: str) -> Share | None:
    found: Share | None = await db.scalar(
        select(Share).where(Share.token_hash == token_hash(token))
    )
    return found


async def user_shares(db: AsyncSession, user_id: uuid.UUID) -> Sequence[Share]:
    """The user's share links, newest first."""
    rows = await db.scalars(
        select(Share).where(Share.user_id == user_id).order_by(Share.created_at.desc(), Share.id)
    )
    return rows.all()


async def revoke(db: AsyncSession, user_id: uuid.UUID, **key: Any) -> bool:
    """Deletes the user's share with this `id` or `token`; False when there is none."""
    if "token" in key:
        where = Share.token_hash == token_hash(key["token"])
    else:
        where = Share.id == key["id"]
    result = await db.execute(delete(Share).where(where, Share.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))
