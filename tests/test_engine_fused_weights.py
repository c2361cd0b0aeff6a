"""The serving weight layout (fused q/k/v and gate/up, oneDNN matmuls on CPU) changes no result."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.model import load_model
from fireside.model.checkpoint import save_model
from tests.conftest import tiny_config
from tests.engine_utils import collect, greedy_reference, plain_copy, tiny_model

GREEDY = SamplingParams(temperature=0, max_tokens=12)


@pytest.mark.parametrize("pack_batch", [None, 16])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention_bias": True, "architecture": "Qwen2ForCausalLM"},
        {"tie_word_embeddings": True},
        {"qk_norm": True, "architecture": "Qwen3ForCausalLM"},
    ],
)
def test_fused_layout_gives_the_same_logits(
    overrides: dict[str, object], pack_batch: int | None
) -> None:
    model = tiny_model(300, **overrides)
    if overrides.get("attention_bias"):
        for block in model.model.layers:
            torch.nn.init.normal_(block.self_attn.q_proj.bias, std=0.5)  # type: ignore[union-attr]
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        before = model(ids)
        params_before = sum(p.numel() for p in model.parameters())
        model.fuse_projections(pack_batch)
        after = model(ids)
    assert model.fused
    assert torch.allclose(before, after, atol=1e-5)
    attn = model.model.layers[0].self_attn
    assert attn.qkv_weight is not None
    if pack_batch is None:
        # The weights are views of the fused matrices, not copies.
        q_storage = attn.q_proj.weight.untyped_storage().data_ptr()
        assert q_storage == attn.qkv_weight.untyped_storage().data_ptr()
    else:
        assert attn.qkv_weight.is_mkldnn
    assert sum(p.numel() for p in model.parameters()) == params_before


def test_fused_layout_in_bf16_matches_the_plain_model() -> None:
    """bf16 on CPU takes the F.linear path of the serving layout (as CUDA does)."""
    model = tiny_model(300).to(torch.bfloat16)
    reference = plain_copy(model).to(torch.bfloat16)
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        model.fuse_projections(16)  # packing applies to fp32 only: ignored here
        assert not model.model.layers[0].self_attn.qkv_weight.is_mkldnn  # type: ignore[union-attr]
        after, before = model(ids).float(), reference(ids).float()
    assert torch.allclose(before, after, atol=0.05 * before.abs().max().item())


def test_fused_model_saves_and_reloads(tmp_path: Path) -> None:
    model = tiny_model(300)
    reference = plain_copy(model)
    model.fuse_projections()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    ids = torch.randint(0, 300, (1, 7))
    with torch.no_grad():
        assert torch.allclose(loaded(ids), reference(ids), atol=1e-6)
    assert loaded.config.num_hidden_layers == tiny_config(300).num_hidden_layers


@pytest.mark.parametrize("tied", [False, True])
def test_an_engine_that_owns_its_model_keeps_one_copy_of_the_weights(
    tmp_path: Path, tied: bool
) -> None:
    model = tiny_model(300, tie_word_embeddings=tied)
    prompt = [5, 6, 7, 8, 9]
    expected = greedy_reference(model, prompt, GREEDY.max_tokens)
    embedding = model.model.embed_tokens.weight.numel()
    engine = Engine(model, None, EngineConfig(pack_weights_for_batch=16), owns_model=True)

    attn = model.model.layers[0].self_attn
    assert attn.qkv_weight is not None and attn.qkv_weight.is_mkldnn
    assert (
        attn.q_proj.weight.numel() == 0 and model.model.layers[0].mlp.down_proj.weight.numel() == 0
    )
    assert model.lm_head.weight.numel() == (embedding if tied else 0)
    assert model.model.embed_tokens.weight.numel() == embedding

    async def run() -> list[int]:
        async with engine:
            return (await collect(engine, prompt, GREEDY, "r")).tokens[0]

    assert asyncio.run(run()) == expected
    with pytest.raises(ValueError, match="dropped"):
        save_model(model, tmp_path)


def test_an_engine_leaves_a_model_it_was_lent_whole() -> None:
    model = tiny_model(300)
    sizes = {k: v.numel() for k, v in model.state_dict().items()}
    Engine(model, None, EngineConfig(pack_weights_for_batch=16))
    assert model.model.layers[0].self_attn.qkv_weight.is_mkldnn  # type: ignore[union-attr]
    assert {k: v.numel() for k, v in model.state_dict().items()} == sizes
    assert not model.serving_only
