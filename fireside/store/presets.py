"""Presets: saved system prompts, the caller's own and those an administrator shared."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Preset


def _visible(user_id: uuid.UUID) -> ColumnElement[bool]:
    return or_(Preset.user_id == user_id, Preset.shared.is_(True))


async def add_preset(
    db: AsyncSession, user_id: uuid.UUID, name: str, system_prompt: str, shared: bool
) -> Preset:
    preset = Preset(user_id=user_id, name=name, system_prompt=system_prompt, shared=shared)
    db.add(preset)
    await db.flush()
    return preset


async def visible_preset(
    db: AsyncSession, user_id: uuid.UUID, preset_id: uuid.UUID
) -> Preset | None:
    """The preset if the caller may see it (theirs, or shared); else None, as if missing."""
    found: Preset | None = await db.scalar(
        select(Preset).where(Preset.id == preset_id, _visible(user_id))
    )
    return found


async def list_presets(
    db: AsyncSession,
    user_id: uuid.UUID,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Preset]:
    """Oldest first (a stable order for a picker); `after` is the (created_at, id) of the last
    row of the previous page."""
    query = select(Preset).where(_visible(user_id))
    if after is not None:
        at, id_ = after
        query = query.where(
            or_(Preset.created_at > at, and_(Preset.created_at == at, Preset.id > id_))
        )
    query = query.order_by(Preset.created_at, Preset.id).limit(limit)
    return list(await db.scalars(query))


async def own_presets(db: AsyncSession, user_id: uuid.UUID) -> list[Preset]:
    """The user's own presets, oldest first (their export)."""
    rows = await db.scalars(
        select(Preset).where(Preset.user_id == user_id).order_by(Preset.created_at, Preset.id)
    )
    return list(rows)


async def delete_preset(db: AsyncSession, preset: Preset) -> None:
    await db.delete(preset)
