"""The database: an async engine for the configured URL, sessions, and migrations at start-up.

Migrations run under a lock so that several processes starting together against one
database migrate it once: a PostgreSQL advisory lock, or a file lock beside a SQLite file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from filelock import FileLock
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from fireside.store.pg_ssl import asyncpg_ssl
from fireside.store.urls import async_database_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every Fireside process; "fireside" in ASCII.
ADVISORY_LOCK_KEY = 0x66697265736964


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


# How long a request waits for SQLite's write lock, or for a pooled connection, before it is
# answered 503 (with Retry-After) rather than held: one user's long write must not hang the
# others' requests for half a minute and then fail them with a 500.
BUSY_TIMEOUT_S = 10.0
# Connections per process. SQLite admits one writer at a time whatever the pool, so its
# pool is sized for concurrent readers; PostgreSQL's for requests plus answers in writing,
# within its 100 connections by default for a few processes.
SQLITE_POOL = (20, 20)  # pool_size, max_overflow
POSTGRES_POOL = (10, 10)


def is_busy(e: BaseException) -> bool:
    """SQLite's "database is locked" (its busy timeout ran out) or the pool's timeout."""
    if isinstance(e, exc.TimeoutError):
        return True
    if isinstance(e, exc.OperationalError):
        text_ = str(e.orig).lower()
        return "database is locked" in text_ or "database is busy" in text_
    return False


class Database:
    def __init__(self, url: str) -> None:
        self.url = async_database_url(url)  # postgresql://, postgres://, ?sslmode= as pasted
        # Statement parameters (titles, messages, password hashes) never reach logs or
        # exception text.
        args: dict[str, Any] = {"hide_parameters": True, "pool_timeout": BUSY_TIMEOUT_S}
        if self.is_sqlite:
            args["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
            if self.sqlite_path is not None:
                args["pool_size"], args["max_overflow"] = SQLITE_POOL
                _private_file(self.sqlite_path)
        else:
            args["pool_pre_ping"] = True
            args["pool_size"], args["max_overflow"] = POSTGRES_POOL
            if self.url.get_driver_name() == "asyncpg":  # libpq's ?sslmode= as asyncpg's ssl
                self.url, args["connect_args"] = asyncpg_ssl(self.url)
        self.engine: AsyncEngine = create_async_engine(self.url, **args)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        database = self.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return Path(database)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Around a write transaction of the streaming path (an answer's start, partial text,
        finish, tool steps). SQLite lets one writer in at a time and puts the others to sleep
        in its busy handler, for 1, 2, 5 ... 100 ms a try: a burst of 16 sends spent up to
        half a second there before their first token. Queued on this lock instead, each
        writer goes in as the last one commits. PostgreSQL locks rows and needs nothing."""
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    async def migrate(self) -> None:
        """Brings the schema to the newest revision; safe with many processes at once."""
        path = self.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path) + ".migrate.lock")
            await asyncio.to_thread(lock.acquire)
            try:
                await self._upgrade()
            finally:
                lock.release()
            return
        await self._upgrade()

    async def _upgrade(self) -> None:
        async with self.engine.connect() as conn:
            postgres = self.url.get_backend_name() == "postgresql"
            if postgres:
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
                await conn.commit()
            try:
                await conn.run_sync(_run_alembic)
                await conn.commit()
            finally:
                if postgres:
                    await conn.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY}
                    )
                    await conn.commit()

    async def close(self) -> None:
        await self.engine.dispose()


def _run_alembic(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _private_file(path: Path) -> None:
    """The database file made (or kept) readable by its owner alone; SQLite gives its -wal and
    -shm files the database file's mode, so they follow."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists() and side.stat().st_mode & 0o077:
            side.chmod(0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite ignores ON DELETE CASCADE without it
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't wait for the streaming writer
    # With WAL, NORMAL survives a crashed or killed process (only a power cut may lose the
    # last commits) and spares an fsync per commit: answers start and save without queueing.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
