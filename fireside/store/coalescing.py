"""Appends batched and deltas coalesced, in front of an event log.

One append per token per answer was the app's largest per-token cost: on Redis an XADD round
trip for the writer and an XREAD for each follower, in memory a follower's wake-up and an SSE
frame. Here appends that come together go to the log as one `append_many` (one pipeline), and
the deltas an answer streams before its stream's next flush become one delta, its text the
pieces' texts joined. A flush goes out on the loop's next turn when the last one is at least
COALESCE_S old (so a slow step's deltas of every answer go as one batch at once), else when it
is: under load, one flush per COALESCE_S carrying every stream's delta. A flush in flight
holds the next one back, which then carries everything that queued meanwhile.

Events keep their order within a stream (a delta joins only the stream's newest queued event,
when that is a delta of the same message), ids stay the inner log's, and a reader resumes with
them as before. `send_delta` does not wait: an answer's reader goes on to its next piece while
its text is on the way, and an awaited `append` of the stream (its `done`) comes after it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from fireside.store.events import Event, EventLog

log = logging.getLogger(__name__)

COALESCE_S = 0.02


@dataclass
class _Queued:
    stream: str
    event: str
    data: dict[str, Any]
    id: asyncio.Future[str] | None = field(default=None)  # an awaited append's


class CoalescingEventLog:
    def __init__(self, inner: EventLog, interval: float = COALESCE_S) -> None:
        self.inner = inner
        self.interval = interval
        self._queued: list[_Queued] = []
        self._open: dict[str, _Queued] = {}  # per stream, its queued delta open to more text
        self._failed: dict[str, BaseException] = {}  # a stream's failed flush, for its writer
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._flushed_at = float("-inf")

    def send_delta(self, stream: str, message_id: str, text: str) -> None:
        """Queues `text` of `message_id`'s answer; raises what a failed flush of the stream
        raised (the event log is down: the answer ends in an error)."""
        self._raise_failure(stream)
        open_ = self._open.get(stream)
        if open_ is not None and open_.data["message_id"] == message_id:
            open_.data["text"] += text
            return
        queued = _Queued(stream, "delta", {"message_id": message_id, "text": text})
        self._queued.append(queued)
        self._open[stream] = queued
        self._schedule(now=False)

    async def append(self, stream: str, event: str, data: dict[str, Any]) -> str:
        """Adds an event after every event queued before it; its id once it is in the log."""
        self._raise_failure(stream)
        queued = _Queued(stream, event, data, asyncio.get_running_loop().create_future())
        self._queued.append(queued)
        self._open.pop(stream, None)
        self._schedule(now=True)
        assert queued.id is not None
        return await asyncio.shield(queued.id)  # a cancelled caller leaves the flush alone

    async def append_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
        return list(await asyncio.gather(*(self.append(*e) for e in events)))

    async def last_id(self, stream: str) -> str | None:
        return await self.inner.last_id(stream)

    async def read(self, stream: str, after: str | None, wait: float = 0) -> list[Event]:
        return await self.inner.read(stream, after, wait)

    def valid_id(self, value: str) -> bool:
        return self.inner.valid_id(value)

    async def close(self) -> None:
        """Writes what is queued, then closes the inner log."""
        while self._flushing is not None or self._queued:
            if self._flushing is None:
                self._start_flush()
            assert self._flushing is not None
            await asyncio.wait({self._flushing})
        await self.inner.close()

    def _raise_failure(self, stream: str) -> None:
        failure = self._failed.pop(stream, None)
        if failure is not None:
            raise failure

    def _schedule(self, now: bool) -> None:
        if self._flushing is not None:
            return  # the flush in flight schedules the next when it ends
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            if not now:
                return
            self._timer.cancel()
        delay = 0.0 if now else max(0.0, self._flushed_at + self.interval - loop.time())
        # call_later(0) runs on the loop's next turn: every writer woken with this one (all
        # the answers of an engine step) has queued by then.
        self._timer = loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flushing = asyncio.get_running_loop().create_task(self._flush(), name="event-flush")

    async def _flush(self) -> None:
        batch, self._queued, self._open = self._queued, [], {}
        self._flushed_at = asyncio.get_running_loop().time()
        try:
            ids = await self.inner.append_many([(q.stream, q.event, q.data) for q in batch])
        except Exception as e:
            log.warning("could not append %d event(s) to the event log", len(batch), exc_info=True)
            for q in batch:
                if q.id is None:
                    self._failed.setdefault(q.stream, e)
                elif not q.id.done():
                    q.id.set_exception(e)
        else:
            for q, id_ in zip(batch, ids, strict=True):
                if q.id is not None and not q.id.done():
                    q.id.set_result(id_)
        finally:
            self._flushing = None
            if self._queued:
                self._schedule(now=any(q.id is not None for q in self._queued))
