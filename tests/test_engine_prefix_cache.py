"""Prefix caching: shared prompt prefixes reuse blocks, are counted, and change nothing."""

from __future__ import annotations

import asyncio

from fireside.engine import Engine, EngineConfig, SamplingParams
from tests.engine_utils import StepGate, collect, greedy_reference, tiny_model

SYSTEM = list(range(50, 75))  # 25 tokens: six full blocks of 4


def test_shared_prefix_hits_give_identical_outputs() -> None:
    model = tiny_model(300)
    cached = Engine(model, None, EngineConfig(block_size=4))
    uncached = Engine(model, None, EngineConfig(block_size=4, prefix_caching=False))
    prompts = [[*SYSTEM, 1, 2, 3], [*SYSTEM, 4, 5], [*SYSTEM, 1, 2, 3, 9, 9, 9]]
    params = SamplingParams(temperature=0.9, seed=11, max_tokens=10, logprobs=2)

    async def run_all(engine: Engine) -> list[tuple[list[int], list[float], int]]:
        out = []
        async with engine:
            for i, p in enumerate(prompts):  # one after another: later ones find the blocks
                got = await collect(engine, p, params, f"r{i}")
                lps = [lp.logprob for lp in got.logprobs[0]]
                out.append((got.tokens[0], lps, got.outputs[0].num_cached_prompt_tokens))
        return out

    with_cache = asyncio.run(run_all(cached))
    without = asyncio.run(run_all(uncached))
    assert [c for _, _, c in with_cache] == [
        0,
        24,
        28,
    ]  # the third also shares the first's [.., 1, 2, 3] block
    assert [c for _, _, c in without] == [0, 0, 0]
    for (tok_a, lp_a, _), (tok_b, lp_b, _) in zip(with_cache, without, strict=True):
        assert tok_a == tok_b
        assert max(abs(a - b) for a, b in zip(lp_a, lp_b, strict=True)) <= 1e-4
    stats = cached.stats()
    assert stats.prefix_cache_hits == 24 + 28
    assert stats.prefix_cache_queries == sum(len(p) for p in prompts)
    assert stats.kv_blocks_used == 0  # cached blocks are free, just not yet overwritten


def test_a_conversation_reuses_its_previous_turn() -> None:
    model = tiny_model(300)
    engine = Engine(model, None, EngineConfig(block_size=4))
    first_prompt = [*SYSTEM, 7]
    params = SamplingParams(temperature=0, max_tokens=12)

    async def main() -> None:
        async with engine:
            first = await collect(engine, first_prompt, params, "t1")
            # The next turn's prompt is the whole conversation so far, plus the new message.
            second_prompt = first_prompt + first.tokens[0] + [8, 9]
            second = await collect(engine, second_prompt, params, "t2")
            cached = second.outputs[0].num_cached_prompt_tokens
            # Generated tokens' full blocks were indexed too, not only the prompt's.
            assert cached == (len(second_prompt) - 1) // 4 * 4 > len(first_prompt)
            assert second.tokens[0] == greedy_reference(model, second_prompt, 12)

    asyncio.run(main())


def test_concurrent_identical_prompts_share_blocks_while_running() -> None:
    model = tiny_model(300)
    engine = Engine(model, None, EngineConfig(block_size=4))
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)

    # Held between forwards: "a" must still be running when "b" arrives, however fast it
    # decodes its 30 tokens.
    gate = StepGate(engine.model)
    gate.close()

    async def main() -> None:
        async with engine:
            first = engine.generate([*SYSTEM, 1], params, "a")
            gate.allow(1)
            await first.__anext__()  # "a" is prefilled and decoding (held before its next step)
            used_alone = engine.stats().kv_blocks_used
            assert used_alone > 0
            second = engine.generate([*SYSTEM, 2], params, "b")
            gate.allow(2)  # the next step: a's decode and b's prefill
            out = await second.__anext__()
            assert out.num_cached_prompt_tokens == 24
            # "b" added only its own tail and decode blocks, not another copy of the prefix.
            assert engine.stats().kv_blocks_used < 2 * used_alone
            gate.open()
            await first.aclose()
            await second.aclose()

    asyncio.run(main())
