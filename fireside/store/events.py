"""The event log: every event of a generation, numbered, so any client on any process can
follow a conversation from its last seen event id.

Two implementations behind one interface: in-process (one server, the embedded default) and
Redis Streams (several processes). Ids increase within a stream and are opaque strings to
callers; `parse_id` says whether a client's Last-Event-ID could be one.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from redis.asyncio import Redis


@dataclass(frozen=True)
class Event:
    id: str
    event: str  # message | delta | tool_call | tool_result | done | error
    data: dict[str, Any]


class Appended(NamedTuple):
    id: str
    previous: str | None  # the id of the event before it in its stream (None: the first)


class EventLog(Protocol):
    async def append(self, stream: str, event: str, data: dict[str, Any]) -> str:
        """Adds an event; returns its id."""
        ...

    async def append_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[Appended]:
        """Adds (stream, event, data) triples in their order, at once (one Redis round trip);
        returns their ids, each with the id before it in its stream, read in the same atomic
        step: a caller that keeps what it appended knows whether it has a stream's every event."""
        ...

    async def last_id(self, stream: str) -> str | None:
        """The newest event's id, or None for an empty stream."""
        ...

    async def read(self, stream: str, after: str | None, wait: float = 0) -> list[Event]:
        """Events after `after` (None: from the start); waits up to `wait` seconds for one
        when there are none yet."""
        ...

    def valid_id(self, value: str) -> bool: ...

    async def close(self) -> None: ...


class MemoryEventLog:
    """One process's log: ids 1, 2, 3... per stream; the newest `keep` events of each stream
    are kept (history lives in the database; the log is for following and resuming)."""

    def __init__(self, keep: int = 20_000) -> None:
        self.keep = keep
        self._streams: dict[str, list[Event]] = defaultdict(list)
        self._dropped: dict[str, int] = defaultdict(int)  # events trimmed from each stream's head
        # Per stream, the future its next append resolves: every reader waiting on the stream
        # shares it. (A Condition costs a lock round and, under wait_for, a task per read: at
        # one read per token per follower, that was the app's largest per-token cost.)
        self._next: dict[str, asyncio.Future[None]] = {}

    def _last(self, stream: str) -> int:
        return self._dropped[stream] + len(self._streams[stream])

    async def append(self, stream: str, event: str, data: dict[str, Any]) -> str:
        return (await self.append_many([(stream, event, data)]))[0].id

    async def append_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[Appended]:
        ids = []
        for stream, event, data in events:
            kept = self._streams[stream]
            last = self._last(stream)
            e = Event(str(last + 1), event, data)
            kept.append(e)
            if len(kept) > self.keep:
                trim = len(kept) - self.keep
                del kept[:trim]
                self._dropped[stream] += trim
            ids.append(Appended(e.id, str(last) if last else None))
        for stream in {stream for stream, _, _ in events}:  # each stream's readers woken once
            waiters = self._next.pop(stream, None)
            if waiters is not None and not waiters.done():
                waiters.set_result(None)
        return ids

    async def last_id(self, stream: str) -> str | None:
        last = self._last(stream)
        return str(last) if last else None

    def _after(self, stream: str, after: int) -> list[Event]:
        return self._streams[stream][max(after - self._dropped[stream], 0) :]

    async def read(self, stream: str, after: str | None, wait: float = 0) -> list[Event]:
        start = int(after) if after else 0
        events = self._after(stream, start)
        if events or wait <= 0:
            return events
        waiters = self._next.get(stream)
        if waiters is None or waiters.done():
            waiters = self._next[stream] = asyncio.get_running_loop().create_future()
        # asyncio.wait leaves the shared future alone when this reader times out.
        await asyncio.wait({waiters}, timeout=wait)
        return self._after(stream, start)

    def valid_id(self, value: str) -> bool:
        return value.isascii() and value.isdigit() and len(value) < 19

    async def close(self) -> None:
        self._streams.clear()
        self._dropped.clear()
        for waiters in self._next.values():  # readers return (empty) now rather than at timeout
            if not waiters.done():
                waiters.set_result(None)
        self._next.clear()


_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


class RedisEventLog:
    """Redis Streams: XADD appends with increasing ids, XREAD BLOCK follows live, from any
    process. Streams expire a day after their last event: history lives in the database."""

    def __init__(self, redis: Redis, prefix: str = "fireside:events:", ttl_s: int = 86400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    async def append(self, stream: str, event: str, data: dict[str, Any]) -> str:
        return (await self.append_many([(stream, event, data)]))[0].id

    async def append_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[Appended]:
        keys = [self.prefix + stream for stream, _, _ in events]
        streams = list(dict.fromkeys(keys))
        # One MULTI: each stream's newest id before the batch, the XADDs, the expiries.
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in streams:
                pipe.xrevrange(key, count=1)
            for key, (_, event, data) in zip(keys, events, strict=True):
                fields = {"event": event, "data": json.dumps(data, separators=(",", ":"))}
                pipe.xadd(key, fields)  # type: ignore[arg-type]
            for key in streams:
                pipe.expire(key, self.ttl_s)
            replies = await pipe.execute()
        newest = {
            key: _text(before[0][0]) if before else None
            for key, before in zip(streams, replies, strict=False)
        }
        appended = []
        for key, added in zip(keys, replies[len(streams) :], strict=False):
            appended.append(Appended(_text(added), newest[key]))
            newest[key] = appended[-1].id
        return appended

    async def last_id(self, stream: str) -> str | None:
        newest: Any = await self.redis.xrevrange(self.prefix + stream, count=1)
        return _text(newest[0][0]) if newest else None

    async def read(self, stream: str, after: str | None, wait: float = 0) -> list[Event]:
        key = self.prefix + stream
        block = int(wait * 1000) if wait > 0 else None
        got: Any = await self.redis.xread({key: after or "0-0"}, block=block)
        if not got:
            return []
        return [
            Event(_text(id_), _text(fields[b"event"]), json.loads(fields[b"data"]))
            for id_, fields in got[0][1]
        ]

    def valid_id(self, value: str) -> bool:
        return bool(_STREAM_ID.match(value))

    async def close(self) -> None:
        await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
