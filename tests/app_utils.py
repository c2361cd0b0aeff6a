"""The chat app under test: a real server (uvicorn, in a thread) on SQLite with the
in-process event log, or on PostgreSQL (a database of its own per test session) with Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from fireside.api.app import create_app
from fireside.api.served import ServedModel
from fireside.app import ChatApp
from fireside.engine import EngineConfig
from fireside.engine.types import EngineClient, EngineStats, RequestOutput, SamplingParams
from fireside.server import load_served
from fireside.settings import Settings
from tests.api_utils import run_app

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
HOLD = "[hold]"  # a prompt holding this gets one piece of answer, then waits to be stopped
NUL_MARK = "[nul]"  # a prompt holding this gets a NUL (U+0000) in front of every piece of answer


class EngineWrapper:
    """The real engine behind a test's own `generate` (scripted, recording or holding answers):
    everything else passes through."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        return self.engine.generate(prompt_ids, params, request_id)

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def is_healthy(self) -> bool:
        return self.engine.is_healthy()


class HoldingEngine(EngineWrapper):
    """The real engine, except that a prompt containing HOLD streams its first text and then
    waits until it is aborted: a stop test that does not race a fast machine; and one
    containing NUL_MARK gets NULs in its answer, as a model may generate them."""

    def __init__(self, engine: EngineClient, decode: Any) -> None:
        self.engine = engine
        self.decode = decode

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        prompt = self.decode(prompt_ids)
        hold, nul = HOLD in prompt, NUL_MARK in prompt
        stream = self.engine.generate(prompt_ids, params, request_id)
        try:
            async for out in stream:
                if hold and any(s.finish_reason for s in out.samples):
                    raise AssertionError("the held answer ended before it was stopped")
                if nul:
                    for sample in out.samples:
                        sample.text = "\x00" + sample.text if sample.text else sample.text
                yield out
                if hold and any(s.text for s in out.samples):
                    await asyncio.Event().wait()  # until cancelled (stopped)
        finally:
            await self.engine.abort(request_id)


def chat_settings(backend: Backend, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=backend.data_dir,
        database_url=backend.database_url,
        redis_url=backend.redis_url,
        app_max_tokens=8,
        auth="required",  # /v1/* takes personal keys
        # Every test signs up (and some fail to log in) from 127.0.0.1 on one shared server;
        # tests/security/test_auth_rate_limits.py sets these back to check them.
        signups_per_address=100_000,
        auth_failures_per_address=100_000,
    )
    values.update(overrides)
    return Settings(**values)


@dataclass
class Backend:
    name: str  # sqlite | postgres
    data_dir: Path
    database_url: str | None = None
    redis_url: str | None = None


def chat_app(model_dir: Path, settings: Settings) -> FastAPI:
    async def load_dir(path: Path) -> ServedModel:
        served = await load_served(path, "tiny", "cpu", EngineConfig(max_num_seqs=8))
        served.engine = HoldingEngine(served.engine, served.tokenizer.decode)
        return served

    return create_app(
        "tiny",
        lambda: load_dir(model_dir),
        extensions=[ChatApp(settings)],
        allowed_hosts=settings.resolved_allowed_hosts(),
        load_dir=load_dir,
    )


@contextmanager
def run_chat_server(model_dir: Path, settings: Settings) -> Iterator[str]:
    with run_app(chat_app(model_dir, settings)) as url:
        yield url


# --- a client of the app ---


@dataclass
class SSEEvent:
    id: str
    event: str
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[SSEEvent]:
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield SSEEvent(
                    fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


@dataclass
class Client:
    url: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url + "/api", timeout=60)

    def signup(self, name: str = "Ann") -> dict[str, Any]:
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        r = self.http.post(
            "/auth/signup", json={"email": email, "password": "secret-pass", "name": name}
        )
        assert r.status_code == 201, r.text
        return dict(r.json(), password="secret-pass")

    def new_conversation(self, **fields: Any) -> dict[str, Any]:
        r = self.http.post("/conversations", json=fields)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def events(
        self, method: str, path: str, limit: int | None = None, **kwargs: Any
    ) -> list[SSEEvent]:
        """The events of a streamed reply (the first `limit`, then the connection is cut)."""
        got: list[SSEEvent] = []
        with self.http.stream(method, path, **kwargs) as r:
            assert r.status_code == 200, r.read().decode()
            assert r.headers["content-type"].startswith("text/event-stream")
            for e in parse_sse(r.iter_lines()):
                got.append(e)
                if limit is not None and len(got) >= limit:
                    break
        return got

    def send(self, conversation_id: str, content: str, **fields: Any) -> list[SSEEvent]:
        return self.events(
            "POST",
            f"/conversations/{conversation_id}/messages",
            json={"content": content, **fields},
        )

    def close(self) -> None:
        self.http.close()


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL, dropped afterwards; skips the test
    when PostgreSQL is not running."""
    import asyncpg
    import pytest

    name = f"fireside_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as e:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 as postgres: {e}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_admin(backend: Backend) -> dict[str, str]:
    """An administrator made straight in the database (as `fireside admin create-user`)."""
    from fireside.app.accounts import create_user
    from fireside.store.db import Database

    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"

    async def create() -> None:
        db = Database(chat_settings(backend).resolved_database_url())
        # As the CLI does: the tables may not exist yet when no server has started on this
        # database (a worker whose first test makes an admin before any server runs).
        await db.migrate()
        async with db.session() as s:
            await create_user(s, email, "admin-password", "Admin", "open", admin=True)
        await db.close()

    asyncio.run(create())
    return {"email": email, "password": "admin-password"}
