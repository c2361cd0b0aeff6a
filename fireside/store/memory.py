"""A user's memory facts: the short things Fireside was asked to remember."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import MemoryFact, now


async def list_facts(db: AsyncSession, user_id: uuid.UUID) -> list[MemoryFact]:
    rows = await db.scalars(
        select(MemoryFact)
        .where(MemoryFact.user_id == user_id)
        .order_by(MemoryFact.created_at, MemoryFact.id)
    )
    return list(rows)


async def count_facts(db: AsyncSession, user_id: uuid.UUID) -> int:
    found = await db.scalar(
        select(func.count()).select_from(MemoryFact).where(MemoryFact.user_id == user_id)
    )
    return int(found or 0)


async def add_fact(db: AsyncSession, user_id: uuid.UUID, content: str) -> MemoryFact:
    fact = MemoryFact(user_id=user_id, content=content)
    db.add(fact)
    await db.flush()
    return fact


async def owned_fact(db: AsyncSession, user_id: uuid.UUID, fact_id: uuid.UUID) -> MemoryFact | None:
    found: MemoryFact | None = await db.scalar(
        select(MemoryFact).where(MemoryFact.id == fact_id, MemoryFact.user_id == user_id)
    )
    return found


async def edit_fact(db: AsyncSession, fact: MemoryFact, content: str) -> MemoryFact:
    fact.content = content
    fact.updated_at = now()
    await db.flush()
    return fact


async def delete_fact(db: AsyncSession, fact: MemoryFact) -> None:
    await db.delete(fact)
    await db.flush()
