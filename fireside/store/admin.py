"""The admin's queries: users and token usage."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import AppSetting, Usage, User


async def users_page(db: AsyncSession, limit: int, after: str | None) -> list[User]:
    """Users by email; `after` is the last email of the previous page."""
    query = select(User).order_by(User.email).limit(limit)
    if after is not None:
        query = query.where(User.email > after)
    return list(await db.scalars(query))


async def user(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    found: User | None = await db.get(User, user_id)
    return found


async def count_admins(db: AsyncSession) -> int:
    query = (
        select(func.count()).select_from(User).where(User.role == "admin", User.status == "active")
    )
    return int(await db.scalar(query) or 0)


async def usage_totals(db: AsyncSession) -> Sequence[tuple[uuid.UUID, str, str, int, int, int]]:
    """(user id, email, model, generations, prompt tokens, completion tokens)."""
    rows = await db.execute(
        select(
            User.id,
            User.email,
            Usage.model,
            func.count(),
            func.sum(Usage.prompt_tokens),
            func.sum(Usage.completion_tokens),
        )
        .join(User, User.id == Usage.user_id)
        .group_by(User.id, User.email, Usage.model)
        .order_by(User.email, Usage.model)
    )
    return [(a, b, c, int(d), int(e or 0), int(f or 0)) for a, b, c, d, e, f in rows.all()]


async def setting(db: AsyncSession, key: str) -> str | None:
    found = await db.get(AppSetting, key)
    return found.value if found is not None else None


async def set_setting(db: AsyncSession, key: str, value: str) -> None:
    found = await db.get(AppSetting, key)
    if found is None:
        db.add(AppSetting(key=key, value=value))
    else:
        found.value = value
    await db.flush()
