"""Rate limits: at most `limit` hits per key in each fixed window of `window_s` seconds.

One interface, two implementations: in-process (one server process; the default) and Redis
(every process behind a load balancer shares the counts). A fixed window is one counter per
key that expires with its window: one atomic script per hit, no per-request log to trim. Its
known cost is that a burst straddling a window edge may pass up to twice the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_s: float) -> float | None:
        """Count one hit on `key`. None if it is within the limit, else the seconds until the
        window ends and hits are allowed again (for a Retry-After header)."""
        ...

    async def peek(self, key: str, limit: int) -> float | None:
        """Whether `key` has used up `limit` in its current window, without counting a hit:
        None if not, else the seconds until the window ends."""
        ...


class InProcessRateLimiter:
    """Counts in this process's memory; `clock` is injectable so tests never wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, hits)
        self._lock = threading.Lock()

    async def hit(self, key: str, limit: int, window_s: float) -> float | None:
        now = self._clock()
        with self._lock:
            end, hits = self._windows.get(key, (0.0, 0))
            if now >= end:
                self._expire(now)
                end, hits = now + window_s, 0
            hits += 1
            self._windows[key] = (end, hits)
        return end - now if hits > limit else None

    async def peek(self, key: str, limit: int) -> float | None:
        now = self._clock()
        with self._lock:
            end, hits = self._windows.get(key, (0.0, 0))
        return end - now if now < end and hits >= limit else None

    def _expire(self, now: float) -> None:
        # Dropping every ended window when any one ends keeps memory bounded by live keys.
        for k in [k for k, (end, _) in self._windows.items() if now >= end]:
            del self._windows[k]


# INCR and PEXPIRE in one atomic step: the first hit of a window starts its expiry, so a
# crash between the two can never leave a counter that never expires.
_HIT_SCRIPT = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if hits > tonumber(ARGV[2]) then return redis.call('PTTL', KEYS[1]) end
return -1
"""


_PEEK_SCRIPT = """
local hits = tonumber(redis.call('GET', KEYS[1]) or '0')
if hits >= tonumber(ARGV[1]) then return redis.call('PTTL', KEYS[1]) end
return -1
"""


class RedisRateLimiter:
    """Counts in Redis, shared by every process that uses the same server and prefix."""

    def __init__(self, client: Redis, prefix: str = "fireside:ratelimit:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_HIT_SCRIPT)
        self._peek = client.register_script(_PEEK_SCRIPT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "fireside:ratelimit:") -> RedisRateLimiter:
        from redis.asyncio import Redis

        return cls(Redis.from_url(url), prefix)

    async def hit(self, key: str, limit: int, window_s: float) -> float | None:
        window_ms = max(1, math.ceil(window_s * 1000))
        left_ms = int(await self._script(keys=[self._prefix + key], args=[window_ms, limit]))
        if left_ms < 0:
            return None
        return max(left_ms, 1) / 1000

    async def peek(self, key: str, limit: int) -> float | None:
        left_ms = int(await self._peek(keys=[self._prefix + key], args=[limit]))
        return None if left_ms < 0 else max(left_ms, 1) / 1000

    async def close(self) -> None:
        await self._client.aclose()
