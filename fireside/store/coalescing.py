"""Appends batched and deltas coalesced, in front of an event log.

One append per token per answer was the app's largest per-token cost: on Redis an XADD round
trip for the writer and an XREAD for each follower, in memory a follower's wake-up and an SSE
frame. Here appends that come together go to the log as one `append_many` (one pipeline), and
the deltas an answer streams before its stream's next flush become one delta, its text the
pieces' texts joined. A flush goes out on the loop's next turn when the last one is at least
COALESCE_S old (so a slow step's deltas of every answer go as one batch at once), else when it
is: under load, one flush per COALESCE_S carrying every stream's delta. A flush in flight
holds the next one back, which then carries everything that queued meanwhile.

Over Redis, followers in this process read what it appended from memory (`local_tail`): each
append_many says the id before each stream's first new event (read in the same MULTI), so a
stream's tail kept here is known to be whole from a given id on, and a follower reading after
an id in it needs no XREAD. A follower anywhere else, or behind the tail, reads Redis as before;
one at the tail's end waits for this process's next append up to LOCAL_WAIT_S, then blocks on
Redis for the rest of its wait (another process may write the stream next).

Events keep their order within a stream (a delta joins only the stream's newest queued event,
when that is a delta of the same message), ids stay the inner log's, and a reader resumes with
them as before. `send_delta` does not wait: an answer's reader goes on to its next piece while
its text is on the way, and an awaited `append` of the stream (its `done`) comes after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fireside.store.events import Appended, Event, EventLog

log = logging.getLogger(__name__)

COALESCE_S = 0.02
LOCAL_WAIT_S = 0.5
TAIL_EVENTS = 256  # kept per stream: a follower further behind reads the inner log
TAIL_STREAMS = 512  # streams with a tail, the least recently appended to dropped first


@dataclass
class _Queued:
    stream: str
    event: str
    data: dict[str, Any]
    id: asyncio.Future[str] | None = field(default=None)  # an awaited append's


@dataclass
class _Tail:
    """A stream's newest events appended here, whole after `before` (None: from the start)."""

    before: str | None
    events: list[Event] = field(default_factory=list)

    def after(self, id_: str | None) -> list[Event] | None:
        """The events after `id_`; None when `id_` is not in this tail."""
        if id_ == self.before:
            return list(self.events)
        for i in range(len(self.events) - 1, -1, -1):
            if self.events[i].id == id_:
                return self.events[i + 1 :]
        return None

    def add(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > TAIL_EVENTS:
            self.before = self.events[-TAIL_EVENTS - 1].id
            del self.events[:-TAIL_EVENTS]


class CoalescingEventLog:
    def __init__(
        self, inner: EventLog, interval: float = COALESCE_S, local_tail: bool = False
    ) -> None:
        self.inner = inner
        self.interval = interval
        self._tails: OrderedDict[str, _Tail] | None = OrderedDict() if local_tail else None
        self._appended: dict[str, asyncio.Future[None]] = {}  # per stream, its next flush
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

    async def last_id(self, stream: str) -> str | None:
        return await self.inner.last_id(stream)

    async def read(self, stream: str, after: str | None, wait: float = 0) -> list[Event]:
        tails = self._tails
        tail = tails.get(stream) if tails is not None else None
        events = tail.after(after) if tail is not None else None
        if events is None:  # no tail here, or `after` is not in it
            return await self.inner.read(stream, after, wait)
        if events:
            return events
        # At the end of the tail: this process most likely writes the stream's next event, but
        # not surely (another answer after a `done` may run elsewhere).
        assert tails is not None and tail is not None
        if wait > 0 and tail.events and tail.events[-1].event != "done":
            loop = asyncio.get_running_loop()
            started = loop.time()
            appended = self._appended.get(stream)
            if appended is None or appended.done():
                appended = self._appended[stream] = loop.create_future()
            await asyncio.wait({appended}, timeout=min(wait, LOCAL_WAIT_S))
            events = tails.get(stream, tail).after(after)
            if events:
                return events
            wait = max(0.0, wait - (loop.time() - started))
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
        for appended in self._appended.values():  # local followers go to the inner log now
            if not appended.done():
                appended.set_result(None)
        await self.inner.close()

    def _keep(self, batch: list[_Queued], ids: list[Appended]) -> None:
        """Appended events onto their streams' tails; followers waiting on them woken."""
        assert self._tails is not None
        for q, (id_, previous) in zip(batch, ids, strict=True):
            tail = self._tails.get(q.stream)
            if tail is None or (tail.events[-1].id if tail.events else tail.before) != previous:
                tail = self._tails[q.stream] = _Tail(previous)  # the chain broke: start anew
            self._tails.move_to_end(q.stream)
            tail.add(Event(id_, q.event, q.data))
        while len(self._tails) > TAIL_STREAMS:
            self._tails.popitem(last=False)
        for stream in {q.stream for q in batch}:
            appended = self._appended.pop(stream, None)
            if appended is not None and not appended.done():
                appended.set_result(None)

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
            told = {q.stream for q in batch if q.id is not None}  # an awaited append hears it
            for q in batch:
                if q.id is not None:
                    if not q.id.done():
                        q.id.set_exception(e)
                elif q.stream not in told:
                    self._failed.setdefault(q.stream, e)
        else:
            for q, appended in zip(batch, ids, strict=True):
                if q.id is not None and not q.id.done():
                    q.id.set_result(appended.id)
            if self._tails is not None:
                self._keep(batch, ids)
        finally:
            self._flushing = None
            if self._queued:
                self._schedule(now=any(q.id is not None for q in self._queued))
