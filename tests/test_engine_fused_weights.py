"""The serving weight layout (fused q/k/v and gate/up, oneDNN matmuls on CPU) changes no result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fireside.model import load_model
from fireside.model.checkpoint import save_model
from tests.conftest import tiny_config
from tests.engine_utils import plain_copy, tiny_model


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention_bias": True, "architecture": "Qwen2ForCausalLM"},
        {"tie_word_embeddings": True},
    ],
)
def test_fused_layout_gives_the_same_logits(overrides: dict[str, object]) -> None:
    model = tiny_model(300, **overrides)
    if overrides.get("attention_bias"):
        for block in model.model.layers:
            torch.nn.init.normal_(block.self_attn.q_proj.bias, std=0.5)  # type: ignore[union-attr]
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        before = model(ids)
        params_before = sum(p.numel() for p in model.parameters())
        model.fuse_projections()
        after = model(ids)
    assert model.fused
    assert torch.allclose(before, after, atol=1e-5)
    # The weights are views of the fused matrices, not copies.
    attn = model.model.layers[0].self_attn
    assert (
        attn.q_proj.weight.untyped_storage().data_ptr() == attn.qkv_weight.untyped_storage().data_ptr()
    )  # type: ignore[union-attr]
    assert sum(p.numel() for p in model.parameters()) == params_before


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
