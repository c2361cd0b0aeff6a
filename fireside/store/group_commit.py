"""Group commit: the streaming path's writes that arrive together share one transaction.

Sixteen sends at once used to be sixteen transactions in a row (on SQLite, each waiting for
the one writer's lock), and as many again for their first partial saves and their finishes;
every statement is a hop to the driver's thread on the event loop the tokens are delivered
from. Here a write is queued as an item of a batch kind (answers to start, partial texts,
answers to finish); one task takes whatever is queued, runs each kind once over all of its
items (a statement per kind, executemany) and commits once. What queues meanwhile goes in the
next transaction, so nothing waits for a timer and a lone write still goes at once.

A batch that fails is rolled back and its items are written again one by one, each in its own
transaction, so one item's error (another send won the one-streaming index) reaches its own
caller and the others are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.db import Database

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741  (an item of a batch kind)
R = TypeVar("R")

# A batch kind: writes its items in the session's open transaction (no commit), and returns
# one result per item, in order.
BatchWrite = Callable[[AsyncSession, list[I]], Awaitable[list[R]]]


@dataclass
class _Job(Generic[I, R]):
    write: BatchWrite[I, R]
    item: I
    done: asyncio.Future[R]


class GroupCommit:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[_Job[Any, Any]] = []
        self._drain: asyncio.Task[None] | None = None

    async def write(self, write: BatchWrite[I, R], item: I) -> R:
        """Writes `item` with whatever else is queued; its result once committed. A caller
        cancelled meanwhile does not cancel the write (a statement cut halfway can spoil the
        connection it ran on)."""
        job: _Job[I, R] = _Job(write, item, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        if self._drain is None:
            self._drain = asyncio.create_task(self._run(), name="group-commit")
        return await asyncio.shield(job.done)

    async def wait_idle(self) -> None:
        """Until everything queued is written (shutdown)."""
        while self._drain is not None:
            await asyncio.wait({self._drain})

    async def _run(self) -> None:
        try:
            # One turn of the loop first: writers woken together (a step's answers, a burst of
            # sends) queue before the first transaction begins.
            await asyncio.sleep(0)
            while self._queue:
                jobs, self._queue = self._queue, []
                await self._commit(jobs)
        finally:
            self._drain = None

    async def _commit(self, jobs: list[_Job[Any, Any]]) -> None:
        kinds: dict[BatchWrite[Any, Any], list[_Job[Any, Any]]] = {}
        for job in jobs:
            kinds.setdefault(job.write, []).append(job)
        try:
            results: list[tuple[_Job[Any, Any], Any]] = []
            async with self.db.session() as db, self.db.writing():
                for write, batch in kinds.items():
                    out = await write(db, [j.item for j in batch])
                    results.extend(zip(batch, out, strict=True))
                await db.commit()
        except Exception as e:
            if len(jobs) > 1:
                for job in jobs:  # alone, so that only the failing item's caller hears of it
                    await self._commit([job])
                return
            if not jobs[0].done.done():
                jobs[0].done.set_exception(e)
            return
        for job, result in results:
            if not job.done.done():
                job.done.set_result(result)
