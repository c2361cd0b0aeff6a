"""The event log's two implementations behind one interface: increasing ids, read after an
id, follow live, and which ids a client may send."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from fireside.store.events import EventLog, MemoryEventLog, RedisEventLog
from tests.app_utils import REDIS_URL, redis_available


def make_log(kind: str) -> EventLog:
    if kind == "memory":
        return MemoryEventLog()
    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    return RedisEventLog(
        Redis.from_url(REDIS_URL, socket_timeout=60), prefix=f"fireside-test:{uuid.uuid4().hex}:"
    )


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_append_read_after_and_follow(kind: str) -> None:
    async def scenario() -> None:
        log = make_log(kind)
        assert await log.last_id("s") is None
        assert await log.read("s", None) == []
        ids = [await log.append("s", "delta", {"text": str(i)}) for i in range(3)]
        assert await log.last_id("s") == ids[-1]
        assert all(log.valid_id(i) for i in ids)
        everything = await log.read("s", None)
        assert [e.id for e in everything] == ids
        assert [e.data["text"] for e in everything] == ["0", "1", "2"]
        after_first = await log.read("s", ids[0])
        assert [e.id for e in after_first] == ids[1:]
        assert await log.read("s", ids[-1]) == []
        assert await log.read("other", None) == []  # streams are apart

        # A follower waiting after the last id wakes on the next append.
        waiting = asyncio.create_task(log.read("s", ids[-1], wait=30))
        await asyncio.sleep(0)
        new_id = await log.append("s", "done", {"message": {}})
        woke = await waiting
        assert [(e.id, e.event) for e in woke] == [(new_id, "done")]
        # Nothing new: an empty answer once the wait is over (no event is invented).
        assert await log.read("s", new_id, wait=0.01) == []
        for bad in ("", "abc", "1-2-3", "-1", "١٢"):
            assert not log.valid_id(bad)
        await log.close()

    asyncio.run(scenario())


def test_memory_log_keeps_the_newest_events() -> None:
    async def scenario() -> None:
        log = MemoryEventLog(keep=3)
        ids = [await log.append("s", "delta", {"i": i}) for i in range(5)]
        assert [e.id for e in await log.read("s", None)] == ids[2:]
        assert [e.id for e in await log.read("s", ids[3])] == ids[4:]
        assert await log.last_id("s") == ids[-1]
        assert await log.append("s", "done", {}) == "6"  # ids keep counting

    asyncio.run(scenario())
