"""The chat application under /api: accounts, conversations (message trees), generation
tasks and their event streams. `ChatApp` plugs it into the API's FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from redis.asyncio import Redis

from fireside.api.state import AppState
from fireside.app import access_log
from fireside.settings import Settings
from fireside.store.broker import Broker, LocalBroker, RedisBroker
from fireside.store.coalescing import CoalescingEventLog
from fireside.store.db import Database
from fireside.store.events import MemoryEventLog, RedisEventLog
from fireside.store.ratelimit import InProcessRateLimiter, RateLimiter, RedisRateLimiter

log = logging.getLogger(__name__)

PREFIX = "/api"


class ChatApp:
    """An `AppExtension` (see fireside.api.app): routes at start, storage in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def install(self, app: FastAPI) -> None:
        from fireside.app.errors import install_database_errors
        from fireside.app.keys import router as keys
        from fireside.app.routes_admin import router as admin
        from fireside.app.routes_auth import router as auth
        from fireside.app.routes_conversations import router as conversations
        from fireside.app.routes_data import router as data
        from fireside.app.routes_feedback import router as feedback
        from fireside.app.routes_memory import router as memory
        from fireside.app.routes_oidc import router as oidc
        from fireside.app.routes_presets import router as presets
        from fireside.app.routes_projects import router as projects
        from fireside.app.routes_run import router as run
        from fireside.app.routes_ws import router as ws

        api = APIRouter(prefix=PREFIX)
        for router in (
            auth,
            oidc,
            conversations,
            projects,
            ws,
            keys,
            feedback,
            memory,
            admin,
            data,
            run,
            presets,
        ):
            api.include_router(router)
        app.include_router(api)
        install_database_errors(app)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        from fireside.app.crypto import SecretBox
        from fireside.app.generation import Generations, interrupt_orphans
        from fireside.app.keys import key_check
        from fireside.app.limits import AuthLimits, redis_prefix
        from fireside.app.runs import MemoryPreviews, Previews, RedisPreviews, Runs
        from fireside.app.state import ChatState
        from fireside.app.temporary import sweep_forever

        access_log.install()  # after uvicorn configured its loggers
        settings = self.settings
        db = Database(settings.resolved_database_url())
        worker = uuid.uuid4().hex
        events: CoalescingEventLog
        broker: Broker
        limiter: RateLimiter = InProcessRateLimiter()
        previews: Previews = MemoryPreviews()
        if settings.redis_url:
            # Longer than any blocking read (XREAD BLOCK waits up to streams.QUIET_S), which a
            # shorter socket timeout (redis-py's default is 5 s) would cut with an error.
            redis = Redis.from_url(settings.redis_url, socket_timeout=60)
            events = CoalescingEventLog(RedisEventLog(redis), local_tail=True)
            broker = RedisBroker(redis, worker)
            prefix = redis_prefix(settings.resolved_database_url())
            limiter = RedisRateLimiter(redis, prefix)
            previews = RedisPreviews(redis, prefix + "html-preview:")
        else:
            events, broker = CoalescingEventLog(MemoryEventLog()), LocalBroker(worker)
        try:
            await db.migrate()
            secrets = SecretBox(settings.resolved_secret_key())
            chat = ChatState(settings, db, events, broker, worker, secrets)
            api_state: AppState = app.state.fireside
            chat.generations = Generations(chat, api_state)
            chat.limits = AuthLimits(limiter, settings)
            chat.runs = Runs(limiter, settings, previews)
            if settings.oidc_configured():
                from fireside.app.oidc import OIDCLogin

                chat.oidc = OIDCLogin(settings)
            await interrupt_orphans(chat)
            await broker.start(chat.generations.stop_local)
            api_state.key_checks.append(key_check(db))
            api_state.require_key = settings.v1_requires_key()
            app.state.chat = chat
            sweeper = asyncio.create_task(sweep_forever(chat))
            yield
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await chat.generations.shutdown()
        finally:
            await broker.close()
            await events.close()
            await db.close()
