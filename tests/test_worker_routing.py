"""WorkerPool.choose: healthy workers only, the same conversation to the same worker, the
least loaded when that one is busy."""

from __future__ import annotations

import pytest

from fireside.engine.types import EngineDeadError, SamplingParams
from fireside.worker.client import AFFINITY_SLACK, Worker, WorkerPool, affinity_key


def pool_of(*addresses: str) -> WorkerPool:
    pool = WorkerPool(addresses)
    pool.workers = [
        Worker(a, None, None, None, healthy=True)  # type: ignore[arg-type]
        for a in addresses
    ]
    return pool


def test_a_conversation_stays_on_its_worker() -> None:
    pool = pool_of("w1:1", "w2:2", "w3:3")
    params = SamplingParams(cache_salt="user-1")
    turn1 = list(range(40))
    turn2 = [*turn1, 99, 98, 97]  # the next turn's prompt begins with the first's
    chosen = pool.choose(affinity_key(turn1, params), set())
    assert pool.choose(affinity_key(turn2, params), set()) is chosen
    # Conversations spread: 60 different ones do not all land on one worker.
    spread = {pool.choose(affinity_key([i, *turn1], params), set()).address for i in range(60)}
    assert spread == {"w1:1", "w2:2", "w3:3"}


def test_a_busy_worker_gives_way_to_the_least_loaded() -> None:
    pool = pool_of("w1:1", "w2:2")
    key = affinity_key([1, 2, 3], SamplingParams())
    preferred = pool.choose(key, set())
    other = next(w for w in pool.workers if w is not preferred)
    preferred.in_flight = AFFINITY_SLACK
    assert pool.choose(key, set()) is preferred  # within the slack: the cache hit wins
    preferred.in_flight = AFFINITY_SLACK + 1
    assert pool.choose(key, set()) is other


def test_only_healthy_untried_workers_are_chosen() -> None:
    pool = pool_of("w1:1", "w2:2")
    pool.workers[0].healthy = False
    key = affinity_key([1], SamplingParams())
    assert all(pool.choose(key, set()).address == "w2:2" for _ in range(5))
    with pytest.raises(EngineDeadError, match="tried w2:2"):
        pool.choose(key, {"w2:2"})
