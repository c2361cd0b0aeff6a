"""Connected OpenAI-compatible endpoints (SQL)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Connection


async def all_connections(db: AsyncSession) -> list[Connection]:
    return list(await db.scalars(select(Connection).order_by(Connection.name)))


async def by_name(db: AsyncSession, name: str) -> Connection | None:
    found: Connection | None = await db.scalar(select(Connection).where(Connection.name == name))
    return found


async def replace_all(db: AsyncSession, wanted: list[Connection]) -> None:
    """The admin's PUT: exactly these connections, updated in place where the name exists."""
    existing = {c.name: c for c in await all_connections(db)}
    names = {c.name for c in wanted}
    await db.execute(delete(Connection).where(Connection.name.not_in(names)))
    for c in wanted:
        old = existing.get(c.name)
        if old is None:
            db.add(c)
        else:
            old.base_url, old.enabled = c.base_url, c.enabled
            if c.api_key_encrypted is not None:
                old.api_key_encrypted = c.api_key_encrypted
    await db.flush()
