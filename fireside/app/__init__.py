"""The chat application under /api: accounts, conversations (message trees), generation
tasks and their event streams. `ChatApp` plugs it into the API's FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from fireside.app.state import ChatState

log = logging.getLogger(__name__)

PREFIX = "/api"


class ChatApp:
    """An `AppExtension` (see fireside.api.app): routes at start, storage in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def install(self, app: FastAPI) -> None:
        from fireside.app.errors import install_database_errors
        from fireside.app.graphql import PATH as GRAPHQL_PATH
        from fireside.app.graphql import graphql_router
        from fireside.app.keys import router as keys
        from fireside.app.routes_admin import router as admin
        from fireside.app.routes_auth import router as auth
        from fireside.app.routes_conversations import router as conversations
        from fireside.app.routes_data import router as data
        from fireside.app.routes_feedback import router as feedback
        from fireside.app.routes_files import MULTIPART_SLACK
        from fireside.app.routes_files import router as files
        from fireside.app.routes_improve import router as improve
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
            improve,
            data,
            run,
            presets,
            files,
        ):
            api.include_router(router)
        app.include_router(api)
        app.include_router(graphql_router(self.settings), prefix=GRAPHQL_PATH)
        install_database_errors(app)
        # A whole file in one request: more than the server's body limit, on this path only.
        limits = app.state.fireside.body_limits
        limits[f"{PREFIX}/files"] = self.settings.max_file_bytes + MULTIPART_SLACK

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        from fireside.app.blobs import Blobs
        from fireside.app.crypto import SecretBox
        from fireside.app.generation import Generations, interrupt_orphans
        from fireside.app.improve import Improver
        from fireside.app.keys import key_check
        from fireside.app.limits import AuthLimits, redis_prefix
        from fireside.app.runs import MemoryPreviews, Previews, RedisPreviews, Runs
        from fireside.app.state import ChatState
        from fireside.app.temporary import sweep_forever
        from fireside.app.versions import Versions

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
            blobs = Blobs(settings.resolved_data_dir() / "files")
            chat = ChatState(settings, db, events, broker, worker, secrets, blobs)
            api_state: AppState = app.state.fireside
            chat.generations = Generations(chat, api_state)
            chat.limits = AuthLimits(limiter, settings)
            chat.runs = Runs(limiter, settings, previews)
            chat.improver = Improver(db, events, settings, worker, broker.alive)
            chat.versions = Versions(chat, api_state)
            if settings.oidc_configured():
                from fireside.app.oidc import OIDCLogin

                chat.oidc = OIDCLogin(settings)
            await interrupt_orphans(chat)
            await broker.start(chat.generations.stop_local)
            api_state.key_checks.append(key_check(db))
            api_state.require_key = settings.v1_requires_key()
            app.state.chat = chat
            sweeper = asyncio.create_task(sweep_forever(chat))
            versions = asyncio.create_task(_start_versions(chat))
            yield
            for task in (sweeper, versions):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await chat.improver.shutdown()
            await chat.versions.shutdown()
            await chat.generations.shutdown()
        finally:
            await broker.close()
            await events.close()
            await db.close()


ORPHAN_JOBS_EVERY_S = 60.0  # a dead process's improve job is taken over within about this


async def _start_versions(chat: ChatState) -> None:
    """Once the model has loaded: the base version registered and the chosen version served;
    then, now and every minute, improve jobs whose process is gone resumed here."""
    try:
        await chat.versions.start()
    except Exception:  # the chat goes on serving the base model
        log.exception("starting model versions failed")
    while True:
        try:
            await chat.improver.resume_orphans()
        except Exception:
            log.exception("resuming improve jobs failed")
        await asyncio.sleep(ORPHAN_JOBS_EVERY_S)
