"""The engine's core promises: cached, batched, chunked greedy decoding equals plain forward
passes; streaming; refusal of prompts that do not fit; aborts and a full pool."""

from __future__ import annotations

import asyncio
import time

import pytest

from fireside.engine import (
    Engine,
    EngineConfig,
    InvalidRequestError,
    PromptTooLongError,
    SamplingParams,
)
from fireside.model import Tokenizer
from tests.engine_utils import StepGate, collect, greedy_reference, tiny_model

GREEDY = SamplingParams(temperature=0, max_tokens=12)


def test_batched_greedy_equals_uncached_reference() -> None:
    model = tiny_model(300)
    # Small blocks and a small token budget: prompts span blocks and prefill in chunks while
    # earlier requests decode.
    engine = Engine(model, None, EngineConfig(block_size=4, max_num_batched_tokens=8))
    prompts = [[5, 6, 7], list(range(10, 41)), [9] * 13, [1], list(range(100, 120))]

    async def one(i: int, prompt: list[int]) -> list[int]:
        await asyncio.sleep(0.005 * i)  # arrive while others are already running
        return (await collect(engine, prompt, GREEDY, f"r{i}")).tokens[0]

    async def main() -> list[list[int]]:
        async with engine:
            return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))

    results = asyncio.run(main())
    for prompt, got in zip(prompts, results, strict=True):
        assert got == greedy_reference(model, prompt, GREEDY.max_tokens)
    assert engine.stats().kv_blocks_used == 0


def test_streams_deltas_whose_text_adds_up(tokenizer: Tokenizer) -> None:
    model = tiny_model(tokenizer.vocab_size)
    engine = Engine(model, tokenizer)
    prompt = tokenizer.encode("def parse(self, text):\n")
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)

    async def main() -> None:
        async with engine:
            got = await collect(engine, prompt, params, "s")
        # One output per token: the stream is incremental, not one final blob.
        assert len(got.outputs) == 20
        assert got.tokens[0] == greedy_reference(model, prompt, 20)
        assert got.text[0] == tokenizer.decode(got.tokens[0], skip_special_tokens=True)
        assert got.finish[0] == "length"
        assert got.outputs[0].prompt_token_ids == prompt

    asyncio.run(main())


def test_prompt_longer_than_context_is_refused() -> None:
    engine = Engine(tiny_model(300), None, EngineConfig(max_model_len=64))

    async def main() -> None:
        async with engine:
            with pytest.raises(PromptTooLongError, match="context length of 64"):
                await collect(engine, list(range(60)), SamplingParams(max_tokens=10), "long")
            with pytest.raises(InvalidRequestError, match="empty"):
                await collect(engine, [], SamplingParams(), "empty")
            with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
                await collect(engine, [1, 300], SamplingParams(), "oov")
            with pytest.raises(InvalidRequestError, match="top_p"):
                await collect(engine, [1], SamplingParams(top_p=0), "top_p")
            # The engine still serves after refusing.
            got = await collect(engine, [1, 2], SamplingParams(temperature=0, max_tokens=3), "ok")
            assert len(got.tokens[0]) == 3

    asyncio.run(main())


async def _wait_until(predicate: object, timeout: float = 60.0) -> None:
    """Polls for a state the test has made certain to come (the deadline only stops a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_closing_the_stream_aborts_and_frees_blocks() -> None:
    engine = Engine(tiny_model(300), None, EngineConfig(block_size=4))
    gate = StepGate(engine.model)  # the requests stay unfinished however fast the machine
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def forwards(count: int) -> None:
        await asyncio.to_thread(gate.wait_arrived, count)

    async def main() -> None:
        async with engine:
            gate.close()
            stream = engine.generate(list(range(1, 30)), params, "gone")
            first = asyncio.ensure_future(stream.__anext__())
            await forwards(1)
            gate.allow(1)  # the prefill
            await first
            await forwards(2)  # its first decode is held
            assert engine.stats().kv_blocks_used == 8  # 30 tokens in blocks of 4
            await stream.aclose()  # the client went away

            # A cancelled consumer task aborts too.
            async def consume() -> None:
                async for _ in engine.generate([1, 2, 3], params, "cancelled"):
                    pass

            task = asyncio.create_task(consume())
            gate.allow(1)  # the held step ends; the loop reads the abort, then the new request
            await forwards(3)  # the new request's prefill
            assert engine.stats().running == 1
            assert engine.stats().kv_blocks_used == 1  # "gone"'s blocks are free
            gate.allow(1)
            await forwards(4)  # its first decode is held
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.open()
            await _wait_until(lambda: engine.stats().kv_blocks_used == 0)
            assert engine.stats().running == 0

    asyncio.run(main())


def test_explicit_abort_ends_the_stream_with_reason_abort() -> None:
    engine = Engine(tiny_model(300))
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True, n=2)

    async def main() -> None:
        async with engine:
            outputs = []
            async for out in engine.generate([4, 5, 6], params, "x"):
                outputs.append(out)
                if len(outputs) == 2:
                    await engine.abort("x")
            last = outputs[-1]
            assert last.finished
            assert {s.index: s.finish_reason for s in last.samples} == {0: "abort", 1: "abort"}
            assert engine.stats().kv_blocks_used == 0

    asyncio.run(main())


def test_full_pool_queues_requests_instead_of_failing() -> None:
    model = tiny_model(300)
    # Room for exactly one request of 8 + 24 tokens at a time.
    engine = Engine(model, None, EngineConfig(block_size=8, num_kv_blocks=4))
    gate = StepGate(engine.model)
    params = SamplingParams(temperature=0, max_tokens=24)
    prompts = [[i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7] for i in (3, 30, 60)]
    events: list[tuple[str, bool]] = []

    async def one(i: int) -> list[int]:
        tokens: list[int] = []
        async for out in engine.generate(prompts[i], params, f"q{i}"):
            events.append((f"q{i}", out.finished))
            tokens += out.samples[0].token_ids
        return tokens

    async def main() -> list[list[int]]:
        async with engine:
            gate.close()
            task = asyncio.gather(*(one(i) for i in range(3)))
            await asyncio.sleep(0)  # all three are sent to the loop
            await asyncio.to_thread(gate.wait_arrived, 1)  # q0's prefill
            gate.allow(1)
            await asyncio.to_thread(gate.wait_arrived, 2)  # q0's first decode
            assert engine.stats().running == 1 and engine.stats().waiting == 2
            gate.open()
            return await task

    results = asyncio.run(main())
    for prompt, got in zip(prompts, results, strict=True):
        assert got == greedy_reference(model, prompt, 24)
    # One at a time: each request streams start to finish before the next one starts.
    order = [rid for rid, _ in events]
    for rid in ("q0", "q1", "q2"):
        first, last = order.index(rid), len(order) - 1 - order[::-1].index(rid)
        assert set(order[first : last + 1]) == {rid}


@pytest.mark.parametrize(
    "overrides",
    [
        {"architecture": "MistralForCausalLM", "sliding_window": 8},
        {"architecture": "Qwen2ForCausalLM", "attention_bias": True, "tie_word_embeddings": True},
        {"architecture": "Qwen3ForCausalLM", "qk_norm": True},
    ],
    ids=["mistral-window", "qwen2", "qwen3"],
)
def test_every_family_decodes_like_the_reference(overrides: dict[str, object]) -> None:
    model = tiny_model(300, **overrides)
    engine = Engine(model, None, EngineConfig(block_size=4, max_num_batched_tokens=8))
    prompts = [list(range(30, 50)), [3, 4, 5]]  # the first outgrows the window

    async def main() -> list[list[int]]:
        async with engine:
            got = await asyncio.gather(
                *(collect(engine, p, GREEDY, f"f{i}") for i, p in enumerate(prompts))
            )
            return [g.tokens[0] for g in got]

    for prompt, tokens in zip(prompts, asyncio.run(main()), strict=True):
        assert tokens == greedy_reference(model, prompt, GREEDY.max_tokens)
