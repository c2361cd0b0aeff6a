"""The block pool's bookkeeping: refcounts, free-list order, and the prefix index."""

from __future__ import annotations

import asyncio

import pytest
import torch

from fireside.engine import Engine, EngineConfig, EngineOverloadedError, SamplingParams
from fireside.engine.kv_cache import KVBlockPool, block_hash
from tests.conftest import tiny_config
from tests.engine_utils import StepGate, tiny_model


def make_pool(num_blocks: int = 4) -> KVBlockPool:
    return KVBlockPool(tiny_config(64), num_blocks, 4, torch.device("cpu"), torch.float32)


def test_blocks_are_refcounted_and_reused_only_when_free() -> None:
    pool = make_pool(3)
    a, b, c = pool.allocate(), pool.allocate(), pool.allocate()
    assert len({a, b, c}) == 3 and pool.num_free == 0
    with pytest.raises(RuntimeError, match="exhausted"):
        pool.allocate()
    pool.share(b)
    pool.release([b])
    assert pool.num_free == 0  # still held once
    pool.release([b, a])
    assert pool.num_free == 2
    assert pool.allocate() == b  # oldest free first


def test_a_freed_block_stays_findable_until_handed_out_again() -> None:
    pool = make_pool(2)
    block = pool.allocate()
    h = block_hash(None, [1, 2, 3, 4])
    pool.register(block, h)
    pool.release([block])
    assert pool.lookup(h) == block and pool.num_used == 0
    pool.share(block)  # a prefix hit revives it
    assert pool.num_used == 1
    pool.release([block])
    other = pool.allocate()
    assert other != block  # the cached block is the most recently freed: evicted last
    pool.allocate()  # now it must be handed out, and forgotten
    assert pool.lookup(h) is None


def test_block_hash_depends_on_everything_before() -> None:
    first = block_hash(None, [1, 2])
    assert block_hash(first, [3, 4]) != block_hash(block_hash(None, [9, 9]), [3, 4])


def test_too_many_waiting_requests_are_refused() -> None:
    engine = Engine(tiny_model(300), None, EngineConfig(max_num_seqs=1, max_waiting=1))
    gate = StepGate(engine.model)  # "a" is still running when "c" arrives, however fast
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main() -> None:
        async with engine:
            gate.close()
            running = engine.generate([1, 2], params, "a")
            running_first = asyncio.ensure_future(running.__anext__())
            await asyncio.to_thread(gate.wait_arrived, 1)
            gate.allow(1)
            await running_first
            queued = engine.generate([3, 4], params, "b")
            queued_task = asyncio.ensure_future(queued.__anext__())
            await asyncio.sleep(0)  # "b" registers before its first wait for output
            with pytest.raises(EngineOverloadedError, match="retry later"):
                await engine.generate([5, 6], params, "c").__anext__()
            await running.aclose()
            gate.open()
            await queued_task  # the queued one runs once the first is gone
            await queued.aclose()

    asyncio.run(main())


def test_cached_prefix_takes_whole_blocks_and_never_the_last_token() -> None:
    pool = make_pool(4)
    tokens = list(range(12))  # three full blocks of 4
    for block, h in zip(
        [pool.allocate() for _ in range(3)], pool.prefix_hashes(tokens), strict=True
    ):
        pool.register(block, h)
    assert len(pool.cached_prefix(tokens)) == 2  # the third block holds the last token
    assert len(pool.cached_prefix([*tokens, 99])) == 3
    assert pool.cached_prefix([0, 1, 2, 7, 4, 5, 6, 7, 8]) == []  # differs in the first block
