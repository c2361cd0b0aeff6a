"""The numpy one-row decoder (fireside/engine/one_row.py): the model's numbers, token by token,
over consecutive and scattered blocks, for every architecture feature the model has."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.engine.kv_cache import KVBlockPool
from fireside.engine.one_row import OneRowDecoder
from fireside.kernels import ggml
from tests.engine_utils import collect, greedy_reference, plain_copy, tiny_model

FEATURES: dict[str, dict[str, object]] = {
    "llama-gqa": {},
    "qwen2-bias": {"attention_bias": True, "architecture": "Qwen2ForCausalLM"},
    "qwen3-qk-norm": {"qk_norm": True, "architecture": "Qwen3ForCausalLM"},
    "sliding-window": {"sliding_window": 5, "architecture": "MistralForCausalLM"},
    "tied-rope-scaled": {
        "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        "num_key_value_heads": 4,
    },
}


def decoder_logits(
    name: str, blocks: list[int], tokens: list[int], graph: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every position of `tokens`, decoded one row at a time into `blocks`, and the
    reference's from one plain forward pass over the whole sequence. graph=False keeps the
    step in numpy where the whole-step ggml graph would run it."""
    model = tiny_model(97, **FEATURES[name])  # type: ignore[arg-type]
    reference = plain_copy(model)
    model.fuse_projections()
    pool = KVBlockPool(model.config, 8, 4, model.device, model.dtype)
    decoder = OneRowDecoder(model, pool)
    assert (decoder.graph is not None) == ggml.available()
    if not graph:
        decoder.graph = None
    with torch.inference_mode():
        got = torch.cat([decoder.decode(t, i, blocks) for i, t in enumerate(tokens)])
        want = reference(torch.tensor([tokens]))[0]
    return got, want


# Consecutive blocks run the whole-step ggml graph (fireside/kernels/step.py) where the kernels
# are built, scattered ones numpy's step; "numpy" forces numpy over consecutive blocks too.
@pytest.mark.parametrize("name", list(FEATURES))
@pytest.mark.parametrize(
    ("blocks", "graph"),
    [([1, 2, 3, 4], True), ([1, 2, 3, 4], False), ([6, 2, 8, 3], True)],
    ids=["consecutive", "consecutive-numpy", "scattered"],
)
def test_logits_equal_the_models(name: str, blocks: list[int], graph: bool) -> None:
    tokens = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43]  # 13 tokens over 4 blocks of 4
    got, want = decoder_logits(name, blocks, tokens, graph)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_applies_only_to_a_fused_cpu_fp32_model() -> None:
    model = tiny_model(97)
    assert not OneRowDecoder.applies(model)  # not laid out for serving yet
    model.fuse_projections()
    assert OneRowDecoder.applies(model)
    bf16 = tiny_model(97).to(torch.bfloat16)
    bf16.fuse_projections()
    assert not OneRowDecoder.applies(bf16)


def test_an_engine_decodes_a_single_stream_with_it() -> None:
    """A lone request's decode steps go through the decoder, and its greedy tokens are the
    reference's (a request beside it is batched through torch; both agree)."""
    model = tiny_model(300, qk_norm=True, architecture="Qwen3ForCausalLM")
    prompt = [5, 6, 7, 8, 9]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    expected = greedy_reference(model, prompt, params.max_tokens)
    engine = Engine(model, None, EngineConfig())
    decoder = engine.scheduler.one_row
    assert decoder is not None
    calls: list[int] = []
    decode = decoder.decode

    def counted(token: int, position: int, blocks: Sequence[int]) -> torch.Tensor:
        calls.append(position)
        return decode(token, position, blocks)

    decoder.decode = counted  # type: ignore[method-assign]

    async def run() -> list[int]:
        async with engine:
            return (await collect(engine, prompt, params, "alone")).tokens[0]

    assert asyncio.run(run()) == expected
    assert len(calls) == params.max_tokens - 1  # every step after the prefill's


@pytest.mark.skipif(not ggml.available(), reason="needs the ggml kernels (make kernels)")
def test_the_step_graph_refuses_a_history_outside_the_pool() -> None:
    model = tiny_model(97)
    model.fuse_projections()
    pool = KVBlockPool(model.config, 8, 4, model.device, model.dtype)
    graph = OneRowDecoder(model, pool).graph
    assert graph is not None
    x = np.zeros(model.config.hidden_size, dtype=np.float32)
    slots = (pool.num_blocks + 1) * pool.block_size
    with pytest.raises(RuntimeError, match="outside the pool"):
        graph.step(x, 0, slots - 1, 2)
    assert np.isfinite(graph.step(x, 0, 0, 1)).all()
