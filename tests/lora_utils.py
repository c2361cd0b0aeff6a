"""LoRA adapters for tests: random ones written in PEFT's on-disk format, and the reference
model with an adapter merged into its weights (W + alpha/r * B A), which the engine's
unmerged, batched updates must match."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from fireside.model import Transformer

PROJECTIONS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
               "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
               "down": "mlp.down_proj"}  # fmt: skip


def write_adapter(
    path: Path,
    model: Transformer,
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down"),
    rank: int = 4,
    alpha: float = 8.0,
    seed: int = 1,
    std: float = 0.3,
) -> Path:
    """A random adapter for `model` as PEFT saves one (B nonzero, unlike a fresh PEFT adapter,
    so it changes the outputs)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(model.config.num_hidden_layers):
        for target in targets:
            module = f"model.layers.{layer}.{PROJECTIONS[target]}"
            weight = model.get_submodule(module).weight
            out_features, in_features = weight.shape
            a = torch.randn(rank, in_features, generator=generator) * std
            b = torch.randn(out_features, rank, generator=generator) * std
            tensors[f"base_model.model.{module}.lora_A.weight"] = a
            tensors[f"base_model.model.{module}.lora_B.weight"] = b
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": [PROJECTIONS[t].split(".")[-1] for t in targets],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def merged_copy(model: Transformer, adapter_dir: Path) -> Transformer:
    """A plain (unfused) copy of `model` with the adapter merged into its weights, computed
    straight from the files: it shares no code with fireside.model.adapters."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        state[f"{module}.weight"] = state[f"{module}.weight"] + scale * (b @ a)
    copy = Transformer(model.config)
    copy.load_state_dict(state)
    return copy.eval()
