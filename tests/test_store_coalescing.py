"""The coalescing event log (fireside/store/coalescing.py) over both logs: concurrent answers'
deltas joined per stream in order, ids increasing, every text read exactly once by a follower
live or resuming from any id; over Redis, followers in the writing process read from its tail,
and still see what another process wrote into the stream."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from fireside.store.coalescing import CoalescingEventLog
from fireside.store.events import Event, EventLog, MemoryEventLog, RedisEventLog
from tests.app_utils import REDIS_URL, redis_available

STREAMS, PIECES = 8, 60


def make_inner(kind: str, prefix: str) -> EventLog:
    if kind == "memory":
        return MemoryEventLog()
    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    return RedisEventLog(Redis.from_url(REDIS_URL, socket_timeout=60), prefix=prefix)


def id_key(kind: str, id_: str) -> tuple[int, ...]:
    return tuple(int(p) for p in id_.split("-"))


async def answer(log: CoalescingEventLog, stream: str, pieces: list[str]) -> None:
    """A generation's writes: its message, its deltas as they come (other answers' writes in
    between), then its done."""
    await log.append(stream, "message", {"id": "m"})
    for i, piece in enumerate(pieces):
        log.send_delta(stream, "m", piece)
        if i % 3 == 0:
            await asyncio.sleep(0)  # the next engine step: other answers run
        if i % 20 == 19:
            await asyncio.sleep(0.03)  # a pause longer than a flush interval
    await log.append(stream, "done", {"message": {"id": "m"}})


async def follow(log: CoalescingEventLog, stream: str, after: str | None) -> list[Event]:
    """What conversation_events does: read after the last id, live, until `done`."""
    got: list[Event] = []
    while not got or got[-1].event != "done":
        events = await log.read(stream, after, wait=5)
        assert events, "a follower waited 5 s for an event that was appended"
        got += events
        after = events[-1].id
    return got


async def numbers(log: CoalescingEventLog, stream: str, after: str | None) -> list[int]:
    """Every event after `after`, however many reads that takes."""
    got: list[Event] = []
    while events := await log.read(stream, after):
        got += events
        after = events[-1].id
    return [e.data["n"] for e in got]


def texts(events: list[Event]) -> str:
    return "".join(e.data["text"] for e in events if e.event == "delta")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_concurrent_answers_coalesce_in_order_and_followers_get_every_text_once(kind: str) -> None:
    async def scenario() -> None:
        prefix = f"fireside-test:{uuid.uuid4().hex}:"
        log = CoalescingEventLog(make_inner(kind, prefix), local_tail=kind == "redis")
        pieces = {f"s{n}": [f"<{n}.{i}>" for i in range(PIECES)] for n in range(STREAMS)}
        followers = [asyncio.create_task(follow(log, s, None)) for s in pieces]
        await asyncio.sleep(0.01)  # followers wait before anything is appended
        await asyncio.gather(*(answer(log, s, p) for s, p in pieces.items()))
        for (stream, sent), followed in zip(
            pieces.items(), await asyncio.gather(*followers), strict=True
        ):
            whole = "".join(sent)
            stored = await log.inner.read(stream, None)  # what any process reads
            assert [e.id for e in followed] == [e.id for e in stored]
            assert texts(stored) == whole
            keys = [id_key(kind, e.id) for e in stored]
            assert keys == sorted(keys) and len(set(keys)) == len(keys)
            assert stored[0].event == "message" and stored[-1].event == "done"
            deltas = [e for e in stored if e.event == "delta"]
            assert len(deltas) < PIECES  # coalesced: several pieces' text in a delta
            assert all(set(e.data) == {"message_id", "text"} for e in deltas)
            # Resuming after any event id gives exactly the rest: every text once.
            for cut in range(len(stored)):
                rest = await log.read(stream, stored[cut].id)
                assert texts(stored[: cut + 1]) + texts(rest) == whole
        await log.close()

    asyncio.run(scenario())


def test_a_tail_does_not_hide_another_process_s_events() -> None:
    """Two processes write one stream (an answer after a `done`, run elsewhere): the tail of
    the first breaks its chain there, so its follower reads Redis and misses nothing."""
    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")

    async def scenario() -> None:
        prefix = f"fireside-test:{uuid.uuid4().hex}:"
        here = CoalescingEventLog(make_inner("redis", prefix), local_tail=True)
        there = CoalescingEventLog(make_inner("redis", prefix), local_tail=True)
        first = await here.append("s", "message", {"n": 1})
        await here.append("s", "done", {"n": 2})
        elsewhere = await there.append("s", "message", {"n": 3})
        assert await numbers(here, "s", first) == [2, 3]
        await here.append("s", "done", {"n": 4})
        assert await numbers(here, "s", first) == [2, 3, 4]
        assert await numbers(here, "s", elsewhere) == [4]
        # A follower at the tail's end (no `done` last) waits for this process's next append,
        # then for Redis: the other process's event still arrives.
        last = await here.append("s", "message", {"n": 5})
        waiting = asyncio.create_task(here.read("s", last, wait=5))
        await asyncio.sleep(0.05)
        await there.append("s", "done", {"n": 6})
        assert [e.data["n"] for e in await waiting] == [6]
        await here.close()
        await there.close()

    asyncio.run(scenario())


def test_a_failed_flush_reaches_the_stream_s_writer() -> None:
    async def scenario() -> None:
        # Nothing listens on port 1: the inner log's appends fail as in a Redis outage.
        unreachable = Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
        dead = RedisEventLog(unreachable)
        log = CoalescingEventLog(dead)
        log.send_delta("s", "m", "lost")
        await asyncio.sleep(0.2)  # its flush fails in the background...
        with pytest.raises(redis.ConnectionError):
            log.send_delta("s", "m", "next")  # ...and the answer's next write hears of it
        log.send_delta("t", "m", "lost")
        with pytest.raises(redis.ConnectionError):  # an awaited append hears of its batch's
            await log.append("t", "done", {})
        log.send_delta("t", "m", "text")  # told once: nothing is left over for a later answer
        await log.close()

    asyncio.run(scenario())
