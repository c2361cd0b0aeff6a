"""Database.writing: SQLite's writers queue in the process instead of in SQLite's busy handler;
PostgreSQL's go in together."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fireside.store.db import Database


async def _inside_at_once(db: Database, writers: int) -> int:
    inside = most = 0

    async def write() -> None:
        nonlocal inside, most
        async with db.writing():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)  # a write transaction's I/O: other tasks run meanwhile
            inside -= 1

    await asyncio.gather(*(write() for _ in range(writers)))
    await db.close()
    return most


def test_sqlite_writers_take_turns(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert asyncio.run(_inside_at_once(db, 8)) == 1


def test_postgresql_writers_are_not_queued() -> None:
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:5432/test")  # never connected here
    assert asyncio.run(_inside_at_once(db, 8)) == 8
