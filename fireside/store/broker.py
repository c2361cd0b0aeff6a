"""What processes tell each other: "stop this conversation's generation" (the stop may reach
any process; the task runs on one), and which processes are alive (so start-up marks only
generations of dead processes interrupted). In-process when alone, Redis when several."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

StopHandler = Callable[[str], None]


class Broker(Protocol):
    async def start(self, on_stop: StopHandler) -> None: ...

    async def publish_stop(self, conversation_id: str) -> None: ...

    async def alive(self, workers: Iterable[str]) -> set[str]:
        """Which of these worker ids belong to running processes."""
        ...

    async def close(self) -> None: ...


class LocalBroker:
    """One process: a stop goes straight to the handler; no other worker is alive."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._on_stop: StopHandler | None = None

    async def start(self, on_stop: StopHandler) -> None:
        self._on_stop = on_stop

    async def publish_stop(self, conversation_id: str) -> None:
        if self._on_stop is not None:
            self._on_stop(conversation_id)

    async def alive(self, workers: Iterable[str]) -> set[str]:
        return {w for w in workers if w == self.worker}

    async def close(self) -> None:
        self._on_stop = None


class RedisBroker:
    """Stops over pub/sub; liveness as a key per process that expires unless refreshed."""

    CHANNEL = "fireside:stop"
    TTL_S = 30

    def __init__(self, redis: Redis, worker: str) -> None:
        self.redis = redis
        self.worker = worker
        self._tasks: list[asyncio.Task[None]] = []

    def _alive_key(self, worker: str) -> str:
        return f"fireside:worker:{worker}"

    async def start(self, on_stop: StopHandler) -> None:
        await self.redis.set(self._alive_key(self.worker), "1", ex=self.TTL_S)
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.CHANNEL)
        self._tasks = [
            asyncio.create_task(self._listen(pubsub, on_stop)),
            asyncio.create_task(self._heartbeat()),
        ]

    async def _listen(self, pubsub: PubSub, on_stop: StopHandler) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except (RedisConnectionError, RedisTimeoutError):
                    # Redis away for a moment: resubscribe (stops sent meanwhile are lost;
                    # the user can press stop again).
                    log.warning("the stop channel dropped; resubscribing", exc_info=True)
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                        await pubsub.subscribe(self.CHANNEL)
                    continue
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    on_stop(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.TTL_S / 3)
            try:
                await self.redis.set(self._alive_key(self.worker), "1", ex=self.TTL_S)
            except Exception:  # Redis away for a moment: try again next beat
                log.warning("could not refresh this worker's liveness key", exc_info=True)

    async def publish_stop(self, conversation_id: str) -> None:
        await self.redis.publish(self.CHANNEL, conversation_id)

    async def alive(self, workers: Iterable[str]) -> set[str]:
        names = sorted(set(workers))
        if not names:
            return set()
        found = await self.redis.mget([self._alive_key(w) for w in names])
        return {w for w, v in zip(names, found, strict=True) if v is not None}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.redis.delete(self._alive_key(self.worker))
