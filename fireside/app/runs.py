"""Running the code of an answer: Python in the `python` tool's sandbox, HTML as a preview.

Python runs in fireside.sandbox with the tool's limits (never anywhere else: where no sandbox
can be made the answer is a 503 saying why), in a worker thread, at most a few at once per
process, and at most `run_per_user` per user per `run_window_s`. The files the program left
in its working directory come back with its output.

An HTML preview is kept briefly (PREVIEW_TTL_S) for its owner only, in Redis when the server
has one (every process sees it), else in this process, and served from its own route with a
policy of its own (fireside/api/headers.py): scripts run, in an opaque origin that reaches
neither the app's cookies nor its API, and nothing loads from anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Protocol

from fireside.api.errors import APIError, bad_request, not_ready
from fireside.app.limits import too_many
from fireside.app.schemas import RunFile, RunResult
from fireside.sandbox import SandboxUnavailable, run_python, unavailable_reason
from fireside.settings import Settings
from fireside.store.ratelimit import RateLimiter
from fireside.tools.python import TOOL_LIMITS, exit_status

if TYPE_CHECKING:
    from redis.asyncio import Redis

MAX_CODE_CHARS = 100_000
MAX_PREVIEW_CHARS = 1_000_000
PREVIEW_TTL_S = 15 * 60
PREVIEWS_PER_USER = 20  # kept at once (in this process's store; Redis lets them expire)


def too_large(what: str, size: int, limit: int) -> APIError:
    return APIError(
        f"the {what} is {size:,} characters; at most {limit:,} can be sent",
        413,
        param="code" if what == "code" else "html",
        code="too_large",
    )


class Runs:
    def __init__(self, limiter: RateLimiter, settings: Settings, previews: Previews) -> None:
        self.limiter = limiter
        self.per_user = settings.run_per_user
        self.window = settings.run_window_s
        self.previews = previews
        # Each run is a sandbox and a thread: a few at once, the rest wait their turn.
        self.slots = asyncio.Semaphore(max(1, min(4, os.cpu_count() or 1)))

    async def run_python(self, user_id: uuid.UUID, code: str) -> RunResult:
        if len(code) > MAX_CODE_CHARS:
            raise too_large("code", len(code), MAX_CODE_CHARS)
        # Probed once per process (bwrap is started): off the event loop.
        if (reason := await asyncio.to_thread(unavailable_reason)) is not None:
            raise not_ready(f"code cannot run on this server: {reason}")
        if wait := await self.limiter.hit(f"run:{user_id}", self.per_user, self.window):
            raise too_many(wait, "runs")
        async with self.slots:
            try:
                result = await asyncio.to_thread(run_python, code, TOOL_LIMITS, collect_files=True)
            except SandboxUnavailable as e:
                raise not_ready(f"code cannot run on this server: {e}") from e
        return RunResult(
            stdout=result.stdout,
            stderr=result.stderr,
            exit_status=exit_status(result, TOOL_LIMITS),
            files=[run_file(f.name, f.data) for f in result.files],
        )

    async def store_preview(self, user_id: uuid.UUID, html: str) -> str:
        if len(html) > MAX_PREVIEW_CHARS:
            raise too_large("html", len(html), MAX_PREVIEW_CHARS)
        if wait := await self.limiter.hit(f"preview:{user_id}", self.per_user, self.window):
            raise too_many(wait, "previews")
        return await self.previews.put(user_id, html)


def run_file(name: str, data: bytes) -> RunFile:
    content_type = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    return RunFile(
        name=name,
        content_type=content_type,
        size=len(data),
        data_base64=base64.b64encode(data).decode("ascii"),
    )


def check_preview_id(preview_id: str) -> None:
    if not (0 < len(preview_id) <= 64 and preview_id.replace("-", "").replace("_", "").isalnum()):
        raise bad_request("not a preview id", "preview_id")


class Previews(Protocol):
    async def put(self, user_id: uuid.UUID, html: str) -> str: ...

    async def get(self, user_id: uuid.UUID, preview_id: str) -> str | None:
        """The owner's preview, or None: missing, expired and another user's alike."""
        ...


class MemoryPreviews:
    def __init__(self) -> None:
        self._kept: dict[tuple[uuid.UUID, str], tuple[float, str]] = {}

    async def put(self, user_id: uuid.UUID, html: str) -> str:
        now = time.monotonic()
        self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
        mine = sorted((v[0], k) for k, v in self._kept.items() if k[0] == user_id)
        for _, key in mine[: max(0, len(mine) - PREVIEWS_PER_USER + 1)]:
            del self._kept[key]  # the oldest make room
        preview_id = secrets.token_urlsafe(16)
        self._kept[(user_id, preview_id)] = (now + PREVIEW_TTL_S, html)
        return preview_id

    async def get(self, user_id: uuid.UUID, preview_id: str) -> str | None:
        kept = self._kept.get((user_id, preview_id))
        return kept[1] if kept is not None and kept[0] > time.monotonic() else None


class RedisPreviews:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def put(self, user_id: uuid.UUID, html: str) -> str:
        preview_id = secrets.token_urlsafe(16)
        await self.redis.set(f"{self.prefix}{user_id}:{preview_id}", html, ex=PREVIEW_TTL_S)
        return preview_id

    async def get(self, user_id: uuid.UUID, preview_id: str) -> str | None:
        found = await self.redis.get(f"{self.prefix}{user_id}:{preview_id}")
        if found is None:
            return None
        return found.decode("utf-8") if isinstance(found, bytes) else str(found)
