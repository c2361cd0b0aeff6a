"""The OpenAI-compatible endpoints admins connected (SQL)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Connection


async def all_connections(db: AsyncSession) -> list[Connection]:
    return list(await db.scalars(select(Connection).order_by(Connection.name)))


async def replace_connections(db: AsyncSession, rows: list[Connection]) -> None:
    """The admin's list becomes exactly `rows` (the caller commits: one transaction)."""
    await db.execute(delete(Connection))
    db.add_all(rows)
    await db.flush()
