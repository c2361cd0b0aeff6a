"""Sampling parameters through the whole engine: logprobs, seeds, n, penalties, bias, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import torch

from fireside.engine import Engine, EngineConfig, SamplingParams
from tests.engine_utils import collect, greedy_reference, plain_copy, tiny_model

T = TypeVar("T")
VOCAB = 300


def run(engine: Engine, coro: Coroutine[Any, Any, T]) -> T:
    async def main() -> T:
        async with engine:
            return await coro

    return asyncio.run(main())


def test_logprobs_equal_full_forward_log_softmax() -> None:
    model = tiny_model(VOCAB)
    engine = Engine(model, None, EngineConfig(block_size=4, max_num_batched_tokens=8))
    prompt = list(range(20, 39))
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=10, logprobs=5, prompt_logprobs=3)
    got = run(engine, collect(engine, prompt, params, "lp"))
    tokens = got.tokens[0]
    with torch.no_grad():
        full = plain_copy(model)(torch.tensor([prompt + tokens]))[0].log_softmax(-1)
    # Generated tokens: position p's distribution chose token p + 1.
    for i, lp in enumerate(got.logprobs[0]):
        row = full[len(prompt) - 1 + i]
        assert lp.token_id == tokens[i]
        assert abs(lp.logprob - row[tokens[i]].item()) <= 1e-4
        top_vals, top_ids = row.topk(5)
        assert [t for t, _ in lp.top] == top_ids.tolist()
        assert max(abs(v - w) for (_, v), w in zip(lp.top, top_vals.tolist(), strict=True)) <= 1e-4
    # Prompt logprobs: in the first output only, entry 0 None, then one per prompt token.
    plp = got.outputs[0].prompt_logprobs
    assert plp is not None and plp[0] is None and len(plp) == len(prompt)
    for i in range(1, len(prompt)):
        entry = plp[i]
        assert entry is not None and entry.token_id == prompt[i]
        assert abs(entry.logprob - full[i - 1, prompt[i]].item()) <= 1e-4
        assert [t for t, _ in entry.top] == full[i - 1].topk(3).indices.tolist()
    assert all(out.prompt_logprobs is None for out in got.outputs[1:])


def test_seed_reproduces_whatever_else_is_in_the_batch() -> None:
    model = tiny_model(VOCAB)
    prompt = [7, 8, 9, 10]
    seeded = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=16)

    alone_engine = Engine(model)
    alone = run(alone_engine, collect(alone_engine, prompt, seeded, "a")).tokens[0]

    busy_engine = Engine(model)

    async def busy() -> list[int]:
        others = [
            collect(
                busy_engine, [i, i + 1], SamplingParams(temperature=1.0, max_tokens=20), f"o{i}"
            )
            for i in range(1, 6)
        ]
        results = await asyncio.gather(collect(busy_engine, prompt, seeded, "s"), *others)
        return results[0].tokens[0]

    assert run(busy_engine, busy()) == alone
    other_seed = Engine(model)
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=99, max_tokens=16)
    assert run(other_seed, collect(other_seed, prompt, params, "b")).tokens[0] != alone


def test_n_samples_share_the_prompt_and_differ() -> None:
    model = tiny_model(VOCAB)
    engine = Engine(model, None, EngineConfig(block_size=4))
    prompt = list(range(40, 50))  # 10 tokens: two full blocks shared, a partial one copied
    params = SamplingParams(temperature=1.0, n=3, seed=5, max_tokens=12)
    got = run(engine, collect(engine, prompt, params, "n"))
    assert sorted(got.tokens) == [0, 1, 2]
    assert all(len(t) == 12 for t in got.tokens.values())
    assert len({tuple(t) for t in got.tokens.values()}) == 3
    # Sample i is the same as a lone request seeded seed + i (forks do not disturb each other).
    solo_engine = Engine(model)
    for i in range(3):
        solo = SamplingParams(temperature=1.0, seed=5 + i, max_tokens=12)
        assert (
            run(solo_engine, collect(solo_engine, prompt, solo, f"s{i}")).tokens[0] == got.tokens[i]
        )
    assert engine.stats().kv_blocks_used == 0


def test_greedy_n_samples_equal_reference() -> None:
    model = tiny_model(VOCAB)
    engine = Engine(model, None, EngineConfig(block_size=4))
    prompt = list(range(3, 14))
    got = run(
        engine, collect(engine, prompt, SamplingParams(temperature=0, n=2, max_tokens=9), "g")
    )
    want = greedy_reference(model, prompt, 9)
    assert got.tokens[0] == want and got.tokens[1] == want


def test_top_k_one_and_min_p_one_are_greedy() -> None:
    model = tiny_model(VOCAB)
    prompt = [11, 12, 13]
    want = greedy_reference(model, prompt, 8)
    engine = Engine(model)
    for params in (
        SamplingParams(temperature=1.5, top_k=1, max_tokens=8),
        SamplingParams(temperature=1.5, min_p=1.0, max_tokens=8),
        SamplingParams(temperature=1.5, top_p=1e-6, max_tokens=8),
    ):
        assert run(engine, collect(engine, prompt, params, "k")).tokens[0] == want


def test_top_k_restricts_choices_to_the_k_best() -> None:
    model = tiny_model(VOCAB)
    prompt = [11, 12, 13]
    with torch.no_grad():
        best3 = set(plain_copy(model)(torch.tensor([prompt]))[0, -1].topk(3).indices.tolist())
    engine = Engine(model)
    firsts = set()
    for seed in range(30):
        params = SamplingParams(temperature=5.0, top_k=3, seed=seed, max_tokens=1)
        firsts.add(run(engine, collect(engine, prompt, params, f"t{seed}")).tokens[0][0])
    assert firsts <= best3 and len(firsts) > 1


def test_logit_bias_and_min_tokens_and_stop_token_ids() -> None:
    model = tiny_model(VOCAB)
    prompt = [1, 2, 3]
    engine = Engine(model, None, EngineConfig(), eos_token_ids=[42])
    forced = SamplingParams(temperature=0, max_tokens=5, logit_bias={17: 1000.0}, ignore_eos=True)
    assert run(engine, collect(engine, prompt, forced, "b")).tokens[0] == [17] * 5

    # EOS forced by bias: ends at once, unless min_tokens holds it off.
    to_eos = SamplingParams(temperature=0, max_tokens=6, logit_bias={42: 1000.0})
    got = run(engine, collect(engine, prompt, to_eos, "e"))
    assert got.tokens[0] == [42] and got.finish[0] == "stop" and got.stop_reason[0] is None
    held = SamplingParams(temperature=0, max_tokens=6, min_tokens=3, logit_bias={42: 1000.0})
    got = run(engine, collect(engine, prompt, held, "m"))
    assert 42 not in got.tokens[0][:3] and got.tokens[0][3] == 42 and len(got.tokens[0]) == 4

    # A stop token id ends the sample and is reported as the reason.
    want = greedy_reference(model, prompt, 6)
    stop_at = SamplingParams(temperature=0, max_tokens=6, stop_token_ids=[want[2]])
    got = run(engine, collect(engine, prompt, stop_at, "s"))
    cut = want.index(want[2]) + 1
    assert got.tokens[0] == want[:cut] and got.stop_reason[0] == want[2]


def test_repetition_and_frequency_penalties_change_repeats() -> None:
    model = tiny_model(VOCAB)
    prompt = [5, 5, 5, 5]
    engine = Engine(model)

    def tokens(params: SamplingParams) -> list[int]:
        return run(engine, collect(engine, prompt, params, "p")).tokens[0]

    plain = tokens(SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
    # The largest presence penalty steers greedy decoding away from the tokens it has used.
    present = tokens(
        SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, presence_penalty=2.0)
    )
    assert len(set(plain)) < len(plain)  # this model repeats itself when left alone
    rep = tokens(
        SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, repetition_penalty=1e6)
    )
    assert len(set(rep)) == len(rep) and 5 not in rep
    freq = tokens(
        SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, frequency_penalty=2.0)
    )
    assert freq != plain
    assert present != plain


def test_tiny_temperature_is_greedy_not_nan() -> None:
    model = tiny_model(VOCAB)
    engine = Engine(model)
    params = SamplingParams(temperature=1e-40, max_tokens=6)
    assert run(engine, collect(engine, [1, 2], params, "t")).tokens[0] == greedy_reference(
        model, [1, 2], 6
    )
