"""Rate limits: in-process (with a test clock) and Redis (two clients: two processes' view)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from fireside.store.ratelimit import InProcessRateLimiter, RedisRateLimiter

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_in_process_limit_window_and_retry_after() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock)

    async def main() -> None:
        assert [await limiter.hit("ip:a", 3, 10) for _ in range(3)] == [None, None, None]
        clock.now += 4
        assert await limiter.hit("ip:a", 3, 10) == pytest.approx(6.0)  # the window ends at +10
        assert await limiter.hit("ip:b", 3, 10) is None  # keys are counted apart
        clock.now += 6  # the window has ended: a fresh count
        assert await limiter.hit("ip:a", 3, 10) is None
        clock.now += 20
        assert await limiter.hit("ip:c", 3, 10) is None
        assert set(limiter._windows) == {"ip:c"}  # ended windows are dropped
        # peek counts nothing: used up at the limit, not before, and free when it ends.
        assert await limiter.peek("ip:c", 2) is None
        assert await limiter.hit("ip:c", 3, 10) is None
        assert await limiter.peek("ip:c", 2) == pytest.approx(10.0)
        assert await limiter.peek("ip:c", 2) == pytest.approx(10.0)
        clock.now += 10
        assert await limiter.peek("ip:c", 2) is None

    asyncio.run(main())


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards (parallel workers share Redis)."""
    import redis

    prefix = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_limit_is_shared_between_processes(prefix: str) -> None:
    async def main() -> None:
        one = RedisRateLimiter.from_url(REDIS_URL, prefix)  # two servers' connections
        two = RedisRateLimiter.from_url(REDIS_URL, prefix)
        try:
            assert await one.hit("ip:a", 3, 30) is None
            assert await two.hit("ip:a", 3, 30) is None
            assert await one.hit("ip:a", 3, 30) is None
            retry = await two.hit("ip:a", 3, 30)  # the fourth hit, counted across both
            assert retry is not None and 0 < retry <= 30
            assert await one.hit("ip:b", 3, 30) is None  # keys are counted apart
            assert await two.peek("ip:b", 2) is None  # peek counts nothing
            assert await two.peek("ip:b", 2) is None
            assert await one.hit("ip:b", 3, 30) is None
            wait = await two.peek("ip:b", 2)
            assert wait is not None and 0 < wait <= 30
            assert await one.peek("ip:none", 1) is None
            # Concurrent hits are counted exactly once each (the script is atomic).
            results = await asyncio.gather(*(c.hit("ip:c", 10, 30) for c in [one, two] * 10))
            assert sum(r is None for r in results) == 10
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


def test_redis_window_expires_with_its_key(prefix: str) -> None:
    import redis

    async def main() -> None:
        limiter = RedisRateLimiter.from_url(REDIS_URL, prefix)
        try:
            assert await limiter.hit("ip:a", 1, 30) is None
            assert await limiter.hit("ip:a", 1, 30) is not None
        finally:
            await limiter.close()

    asyncio.run(main())
    client = redis.Redis.from_url(REDIS_URL)
    ttl = client.pttl(prefix + "ip:a")
    assert 0 < ttl <= 30_000  # the counter expires with its window, never lingers
    client.delete(prefix + "ip:a")  # as if the window had ended
    client.close()

    async def after() -> float | None:
        limiter = RedisRateLimiter.from_url(REDIS_URL, prefix)
        try:
            return await limiter.hit("ip:a", 1, 30)
        finally:
            await limiter.close()

    assert asyncio.run(after()) is None
