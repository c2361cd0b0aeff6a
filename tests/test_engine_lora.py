"""LoRA adapters served beside the base (vLLM's multi-LoRA): a request naming an adapter runs
with it, batched in the same steps as requests to the base and to other adapters, and each
request's tokens equal its own greedy continuation under the merged weights. The prefix cache
never hands one adapter's blocks to another."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from fireside.engine import Engine, EngineConfig, InvalidRequestError, SamplingParams
from fireside.model.adapters import AdapterError, load_adapter, merged_weight
from tests.engine_utils import collect, greedy_reference, tiny_model
from tests.lora_utils import merged_copy, write_adapter

VOCAB = 97
PROMPTS = [[5, 17, 3, 44, 9], [60, 2, 2, 71], [11, 12, 13, 14, 15, 16, 17, 18, 19]]


def greedy(max_tokens: int = 12, **fields: object) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **fields)  # type: ignore[arg-type]


def test_fused_layout_matches_the_merged_weights(tmp_path: Path) -> None:
    """The stacked A / block-diagonal B of each fused group equal W + scale B A for each of
    its projections, targets missing from a group included."""
    model = tiny_model(VOCAB)
    adapter_dir = write_adapter(tmp_path / "a", model, targets=("q", "v", "up", "down"))
    adapter = load_adapter("a", adapter_dir, model.config, torch.device("cpu"), torch.float32)
    merged = merged_copy(model, adapter_dir)
    for layer in range(model.config.num_hidden_layers):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):  # fmt: skip
            module = f"model.layers.{layer}.{name}"
            base = model.get_submodule(module).weight.detach()
            got = merged_weight(adapter, model.config, layer, name.split(".")[1], base)
            want = merged.get_submodule(module).weight.detach()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_adapters_and_the_base_share_steps_each_with_its_own_output(tmp_path: Path) -> None:
    model = tiny_model(VOCAB)
    a_dir = write_adapter(tmp_path / "a", model, seed=1)
    b_dir = write_adapter(tmp_path / "b", model, targets=("q", "k", "v", "o"), rank=2, seed=2)
    want = {
        None: [greedy_reference(model, p, 12) for p in PROMPTS],
        "a": [greedy_reference(merged_copy(model, a_dir), p, 12) for p in PROMPTS],
        "b": [greedy_reference(merged_copy(model, b_dir), p, 12) for p in PROMPTS],
    }
    assert want["a"] != want[None] and want["b"] != want[None]  # the adapters change answers

    engine = Engine(model, config=EngineConfig(max_num_seqs=16, num_kv_blocks=64, block_size=4))
    engine.adapters.load("a", a_dir)
    engine.adapters.load("b", b_dir)

    async def main() -> dict[str | None, list[list[int]]]:
        async with engine:
            jobs = {
                name: [
                    collect(engine, p, greedy(lora=name), f"{name}-{i}")
                    for i, p in enumerate(PROMPTS)
                ]
                for name in want
            }
            # Every request at once: the steps mix base rows and both adapters' rows.
            flat = [job for name in want for job in jobs[name]]
            done = await asyncio.gather(*flat)
            # And alone: single-stream decode runs its one row on another kernel.
            alone = await collect(engine, PROMPTS[0], greedy(lora="a"), "alone")
        it = iter(done)
        got = {name: [next(it).tokens[0] for _ in PROMPTS] for name in want}
        got["alone"] = [alone.tokens[0]]
        return got

    got = asyncio.run(main())
    assert got.pop("alone") == want["a"][:1]
    assert got == want


def test_the_prefix_cache_is_keyed_by_adapter(tmp_path: Path) -> None:
    model = tiny_model(VOCAB)
    a_dir = write_adapter(tmp_path / "a", model, seed=1)
    engine = Engine(model, config=EngineConfig(max_num_seqs=4, num_kv_blocks=64, block_size=4))
    engine.adapters.load("a", a_dir)
    prompt = list(range(1, 17))  # four full blocks

    async def main() -> list[int]:
        async with engine:
            base = await collect(engine, prompt, greedy(4), "base")
            with_a = await collect(engine, prompt, greedy(4, lora="a"), "a")
            again = await collect(engine, prompt, greedy(4, lora="a"), "a-again")
            engine.adapters.load("a", a_dir)  # a reload is another adapter to the cache
            reloaded = await collect(engine, prompt, greedy(4, lora="a"), "a-reloaded")
        return [c.outputs[-1].num_cached_prompt_tokens for c in (base, with_a, again, reloaded)]

    assert asyncio.run(main()) == [0, 0, 12, 0]


def test_unknown_adapters_and_bad_directories_are_refused(tmp_path: Path) -> None:
    model = tiny_model(VOCAB)
    engine = Engine(model, config=EngineConfig(max_num_seqs=2, num_kv_blocks=16, block_size=4))

    async def ask() -> None:
        async with engine:
            await collect(engine, [1, 2, 3], greedy(2, lora="nope"), "x")

    with pytest.raises(InvalidRequestError, match="no LoRA adapter named 'nope'"):
        asyncio.run(ask())

    other = tiny_model(VOCAB, hidden_size=32, intermediate_size=64, head_dim=8)
    wrong_base = write_adapter(tmp_path / "other", other)
    cases = {
        "has no adapter_config.json": tmp_path / "missing",
        "another model": wrong_base,
    }
    (tmp_path / "missing").mkdir()
    lm_head = write_adapter(tmp_path / "lm", model, targets=("q",))
    weights = lm_head / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    tensors["base_model.model.lm_head.lora_A.weight"] = torch.zeros(4, 64)
    save_file(tensors, str(weights))
    cases["only those are served"] = lm_head
    for reason, path in cases.items():
        with pytest.raises(AdapterError, match=reason):
            engine.adapters.load("x", path)
    with pytest.raises(AdapterError, match="adapter name"):
        engine.adapters.load("../etc", wrong_base)
    assert engine.adapters.list() == []


def test_an_adapter_trained_here_serves_as_its_merged_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The training side's adapter (PEFT, fireside.model.lora) served beside its base gives
    the greedy tokens of `fireside merge`'s model: the two sides agree on the format."""
    from fireside.model import load_pretrained
    from fireside.model.lora import add_adapter, lora_settings, merge_adapter, save_adapter

    trained = load_pretrained(tiny_model_dir, "cpu").model
    peft_model = add_adapter(trained, lora_settings(4, 8, "q,v,up,down"), tiny_model_dir)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # a fresh adapter's B is zero: make it change the outputs
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    save_adapter(peft_model, tmp_path / "adapter")
    merge_adapter(tiny_model_dir, tmp_path / "adapter", tmp_path / "merged")

    base = load_pretrained(tiny_model_dir, "cpu").model
    merged = load_pretrained(tmp_path / "merged", "cpu").model
    prompt = [5, 17, 3, 44, 9, 2]
    want = greedy_reference(merged, prompt, 10)
    assert want != greedy_reference(base, prompt, 10)
    engine = Engine(base, config=EngineConfig(max_num_seqs=2, num_kv_blocks=32, block_size=4))
    engine.adapters.load("trained", tmp_path / "adapter")

    async def main() -> list[int]:
        async with engine:
            return (await collect(engine, prompt, greedy(10, lora="trained"), "t")).tokens[0]

    assert asyncio.run(main()) == want
