"""Fireside's Transformer against transformers: same logits and greedy text, both directions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from fireside.model import Tokenizer, Transformer, load_model, load_pretrained, save_pretrained
from fireside.model.checkpoint import save_model
from tests.conftest import tiny_config

TOL = 1e-4
COMMON: dict[str, Any] = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    initializer_range=0.3,  # large weights: greedy choices far from ties
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
FAMILIES: dict[str, PretrainedConfig] = {
    "llama": LlamaConfig(**COMMON, rope_parameters=LLAMA3_ROPE),
    "mistral": MistralConfig(**COMMON, sliding_window=16),
    "qwen2": Qwen2Config(**COMMON, tie_word_embeddings=True),
    "qwen3": Qwen3Config(**COMMON),
}


def hf_model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(FAMILIES[family]).eval()


def greedy(model: Transformer, prompt: torch.Tensor, n: int) -> list[int]:
    ids = prompt
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[0, prompt.shape[1] :].tolist()


def to_v4_layout(model_dir: Path) -> None:
    """Rewrite config.json as transformers 4 wrote it: rope_theta and rope_scaling at the top."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope if rope.get("rope_type") != "default" else None
    if cfg["rope_scaling"]:
        cfg["rope_scaling"]["type"] = cfg["rope_scaling"].pop("rope_type")
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("layout", ["v5", "v4"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.inference_mode()
def test_hf_checkpoint_loads_with_same_logits(family: str, layout: str, tmp_path: Path) -> None:
    hf = hf_model(family)
    hf.save_pretrained(tmp_path)
    if layout == "v4":
        to_v4_layout(tmp_path)
    ours = load_model(tmp_path)
    assert ours.config.architecture == type(hf).__name__
    # Longer than Mistral's sliding window and Llama-3's original context, so both matter.
    x = torch.randint(0, 320, (2, 48), generator=torch.Generator().manual_seed(1))
    expected = hf(x).logits
    got = ours(x)
    assert (expected - got).abs().max().item() <= TOL
    assert expected.abs().max().item() > 0.1  # the comparison is not between near-zero tensors

    prompt = x[:1, :8]
    want = hf.generate(prompt, max_new_tokens=32, do_sample=False, min_new_tokens=32)
    assert greedy(ours, prompt, 32) == want[0, 8:].tolist()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.inference_mode()
def test_fireside_model_loads_in_transformers(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg_hf = FAMILIES[family]
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}.get(
        family, f"Qwen{family[-1]}ForCausalLM"
    )
    cfg = tiny_config(
        320,
        architecture=arch,
        attention_bias=family == "qwen2",
        qk_norm=family == "qwen3",
        tie_word_embeddings=bool(cfg_hf.tie_word_embeddings),
        sliding_window=16 if family == "mistral" else None,
    )
    model = Transformer(cfg)
    model.init_weights(std=0.3)
    if cfg.attention_bias:
        for block in model.model.layers:
            torch.nn.init.normal_(block.self_attn.q_proj.bias, std=0.3)
    save_model(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == arch
    x = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(2))
    assert (hf(x).logits - model(x)).abs().max().item() <= TOL


@torch.inference_mode()
def test_sharded_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_config(320))
    model.init_weights()
    save_model(model, tmp_path, max_shard_bytes=40_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    x = torch.randint(0, 320, (1, 16))
    assert torch.equal(load_model(tmp_path)(x), model(x))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert (hf(x).logits - model(x)).abs().max().item() <= TOL


def test_loads_without_a_double_copy(tmp_path: Path) -> None:
    """Weights land in the tensors safetensors read; no second, randomly initialised copy."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(320, tie_word_embeddings=True))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert all(not p.is_meta for p in loaded.parameters())
    assert loaded.dtype == torch.float32  # CPU default
    assert load_model(tmp_path, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_fireside_model_directory_loads_in_transformers(
    tiny_model_dir: Path, tokenizer: Tokenizer
) -> None:
    bundle = load_pretrained(tiny_model_dir)
    hf_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    text = "def encode(obj):\n    return json.dumps(obj)"
    ids = bundle.tokenizer.encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.inference_mode():
        assert (hf(x).logits - bundle.model(x)).abs().max().item() <= TOL
    assert bundle.stop_token_ids == [tokenizer.eos_id]
    save_pretrained(bundle.model, bundle.tokenizer, tiny_model_dir.parent / "again")


def test_saved_files_are_readable_by_others(tmp_path: Path) -> None:
    model = Transformer(tiny_config(320))
    save_model(model, tmp_path)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o044 == 0o044, name
