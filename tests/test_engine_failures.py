"""When a step fails: a failing step ends only its own requests; a dead loop answers every
request in flight (running, waiting, or not yet picked up) with EngineDeadError. The model is
held between forwards by a StepGate, so what is in flight never depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fireside.engine import Engine, EngineConfig, EngineDeadError, RequestOutput, SamplingParams
from tests.engine_utils import StepGate, collect, tiny_model

LONG = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)


class LoopKilled(BaseException):
    """What a step's recovery does not catch (as SystemExit or KeyboardInterrupt would not)."""


async def first(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
    return await anext(stream)


async def held(gate: StepGate, count: int) -> None:
    await asyncio.to_thread(gate.wait_arrived, count)


def test_a_failing_step_ends_its_requests_and_the_engine_serves_on() -> None:
    engine = Engine(tiny_model(300))
    gate = StepGate(engine.model)

    async def main() -> None:
        async with engine:
            gate.close()
            stream = engine.generate([1, 2, 3], LONG, "doomed")
            got = asyncio.ensure_future(collect_all(stream))
            await held(gate, 1)
            gate.allow(1)  # the prefill: one token out
            await held(gate, 2)
            gate.fail(RuntimeError("a kernel failed"))  # the first decode raises
            outputs = await asyncio.wait_for(got, 60)
            assert outputs[-1].finished
            assert outputs[-1].samples[-1].finish_reason == "error"
            assert engine.is_healthy() and engine.stats().kv_blocks_used == 0
            gate.open()
            after = await collect(engine, [4, 5], SamplingParams(temperature=0, max_tokens=3), "ok")
            assert len(after.tokens[0]) == 3 and after.finish[0] == "length"

    asyncio.run(main())


async def collect_all(stream: AsyncIterator[RequestOutput]) -> list[RequestOutput]:
    return [out async for out in stream]


def test_a_dead_loop_answers_every_request_in_flight() -> None:
    # One running sample at a time, so the second request waits in the scheduler.
    engine = Engine(tiny_model(300), None, EngineConfig(max_num_seqs=1))
    gate = StepGate(engine.model)

    async def main() -> None:
        async with engine:
            gate.close()
            running = engine.generate([1, 2, 3], LONG, "running")
            waiting = engine.generate([4, 5, 6], LONG, "waiting")
            running_first = asyncio.ensure_future(first(running))
            waiting_first = asyncio.ensure_future(first(waiting))
            await held(gate, 1)  # both were sent before the loop stepped
            gate.allow(1)  # "running" prefills and streams its first token
            assert (await running_first).samples[0].token_ids
            await held(gate, 2)  # its first decode is held; "waiting" is queued behind it
            assert engine.stats().waiting == 1
            # Sent while the loop is inside a step: still in the inbox when the loop dies.
            unread = engine.generate([7, 8], LONG, "unread")
            unread_first = asyncio.ensure_future(first(unread))
            await asyncio.sleep(0)  # it registers and sends itself to the loop
            gate.fail(LoopKilled())

            with pytest.raises(EngineDeadError, match="LoopKilled"):
                await asyncio.wait_for(anext(running), 60)
            for pending in (waiting_first, unread_first):
                with pytest.raises(EngineDeadError, match="LoopKilled"):
                    await asyncio.wait_for(pending, 60)
            assert not engine.is_healthy()
            with pytest.raises(EngineDeadError):
                await first(engine.generate([9], LONG, "late"))

    asyncio.run(main())
