"""Presets: saved system prompts a new chat can start from. Users keep their own;
administrators publish shared ones that every user sees."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app.cursors import decode_cursor, encode_cursor
from fireside.app.errors import forbidden
from fireside.app.schemas import Page, PresetCreate, PresetPublic
from fireside.store import presets as store
from fireside.store.models import Preset, User


def public(preset: Preset, user: User) -> PresetPublic:
    return PresetPublic(
        id=preset.id,
        name=preset.name,
        system_prompt=preset.system_prompt,
        shared=preset.shared,
        mine=preset.user_id == user.id,
        created_at=preset.created_at,
    )


async def create_preset(db: AsyncSession, user: User, body: PresetCreate) -> PresetPublic:
    if body.shared and user.role != "admin":
        raise forbidden("only an administrator may share a preset")
    preset = await store.add_preset(db, user.id, body.name, body.system_prompt, body.shared)
    await db.commit()
    return public(preset, user)


async def list_presets(
    db: AsyncSession, user: User, cursor: str | None, limit: int
) -> Page[PresetPublic]:
    after = decode_cursor(cursor) if cursor else None
    rows = await store.list_presets(db, user.id, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[public(p, user) for p in rows],
        next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None,
    )
