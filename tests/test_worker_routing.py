"""WorkerPool.choose: healthy workers only, the same conversation to the same worker, the
least loaded when that one is busy."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from fireside.engine.types import EngineDeadError, SamplingParams
from fireside.worker.client import AFFINITY_SLACK, Worker, WorkerPool, affinity_key
from tests.worker_utils import run_gateway_with


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


def test_a_conversation_returns_to_the_worker_that_holds_its_prefix(
    api_model_dir: Path, tmp_path: Path
) -> None:
    """Through a real gateway over two workers: each conversation's second turn lands where its
    first ran (its prompt's blocks are cached there), and the conversations use both workers."""
    with run_gateway_with(api_model_dir, tmp_path) as gateway:
        client = openai.OpenAI(base_url=gateway.server.base_url, api_key="-", max_retries=0)
        workers = gateway.workers
        for i in range(6):
            history = [{"role": "user", "content": f"Conversation {i}: " + "tell me more " * 20}]
            counts = [w.metric("fireside_worker_requests_total") for w in workers]
            first = client.chat.completions.create(model="tiny", messages=history, max_tokens=4)  # type: ignore[arg-type]
            ran = [
                w.metric("fireside_worker_requests_total") - c
                for w, c in zip(workers, counts, strict=True)
            ]
            assert sorted(ran) == [0, 1]
            home = workers[ran.index(1)]
            hits = home.metric("fireside_worker_prefix_cache_hits_total")
            history += [
                {"role": "assistant", "content": first.choices[0].message.content or ""},
                {"role": "user", "content": "and then?"},
            ]
            client.chat.completions.create(model="tiny", messages=history, max_tokens=4)  # type: ignore[arg-type]
            assert home.metric("fireside_worker_requests_total") == counts[workers.index(home)] + 2
            assert home.metric("fireside_worker_prefix_cache_hits_total") > hits
        assert all(w.metric("fireside_worker_requests_total") > 0 for w in workers)
