"""LoRA adapters on Fireside's Transformer, through PEFT, in PEFT's own file format.

Fireside's module names are Hugging Face's, so PEFT's `LoraConfig(target_modules=...)` finds
the same projections in our model as in `LlamaForCausalLM`, and an adapter saved here
(`adapter_config.json` + `adapter_model.safetensors`, keys
`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`) loads in transformers +
`peft.PeftModel.from_pretrained` unchanged, and the other way round.

An adapter trains on the unfused model. The serving layout (`Transformer.fuse_projections`)
reads the projections' base weights and would skip the adapter, so it refuses a model that
carries one: merge first (`merge_adapter`, `fireside merge`).

PEFT (and the transformers it brings) is imported only when an adapter is used.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from fireside.errors import CheckpointError, TrainingError
from fireside.model.pretrained import load_pretrained, save_pretrained
from fireside.model.transformer import Transformer

if TYPE_CHECKING:
    from peft import PeftModel

# --lora-targets' short names -> the modules of each block they adapt.
TARGETS = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class LoraSettings:
    """rank r, alpha (the update is scaled by alpha / r) and the projections adapted."""

    rank: int
    alpha: int
    targets: list[str] = field(default_factory=lambda: list(TARGETS))

    def describe(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"lora_rank": self.rank, "lora_alpha": self.alpha, "lora_targets": self.targets}


def lora_settings(rank: int, alpha: int | None = None, targets: str | None = None) -> LoraSettings:
    """Checked settings from the command line's values; alpha defaults to 2 x rank."""
    if rank < 1:
        raise TrainingError(f"--lora-rank must be a positive integer, got {rank}")
    if alpha is not None and alpha < 1:
        raise TrainingError(f"--lora-alpha must be a positive integer, got {alpha}")
    names = [t.strip() for t in (targets or ",".join(TARGETS)).split(",")]
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise TrainingError(
            f"--lora-targets: unknown {', '.join(repr(t) for t in unknown) or 'empty list'}; "
            f"choose from {','.join(TARGETS)}"
        )
    if len(set(names)) != len(names):
        raise TrainingError(f"--lora-targets names a projection twice: {targets!r}")
    return LoraSettings(rank, alpha if alpha is not None else 2 * rank, names)


def add_adapter(model: Transformer, settings: LoraSettings, base: str | Path) -> PeftModel:
    """`model` with a fresh adapter (B = 0, so it starts as the base model); only the
    adapter's weights train. `base`: the base model's directory, recorded in the adapter."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=[TARGETS[t] for t in settings.targets],
        lora_dropout=0.0,  # no randomness: a resumed run retraces the uninterrupted one
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    # Set after: get_peft_model takes it from a transformers model's `name_or_path`.
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    return peft_model


def has_adapter(model: nn.Module) -> bool:
    """Whether `model` is a PeftModel (asked without importing PEFT for models that are not)."""
    return isinstance(getattr(model, "peft_config", None), dict)


@contextlib.contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """The base model inside the block (the DPO reference), with no second copy of its
    weights; a model without an adapter is the base model already."""
    if not has_adapter(model):
        yield
        return
    with model.disable_adapter():  # type: ignore[operator]
        yield


def save_adapter(model: PeftModel, path: str | Path) -> None:
    """adapter_config.json + adapter_model.safetensors, as PEFT writes them."""
    path = Path(path)
    had_readme = (path / "README.md").exists()
    # The embeddings never train here, so never check (on the Hub) whether they were resized.
    model.save_pretrained(str(path), safe_serialization=True, save_embedding_layers=False)
    if not had_readme:
        (path / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template


def load_adapter(model: Transformer, path: str | Path) -> PeftModel:
    """`model` with the adapter saved at `path` (PEFT's format, ours or another tool's)."""
    from peft import PeftModel

    path = Path(path)
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise CheckpointError(
            f"{str(path)!r} is not a LoRA adapter: it has no {ADAPTER_CONFIG} "
            f"(an adapter directory holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(config_file)!r} is not valid JSON: {e.msg}") from None
    if config.get("peft_type") != "LORA":
        raise CheckpointError(
            f"{str(path)!r} holds a {config.get('peft_type')!r} adapter; only LoRA is supported"
        )
    try:
        return PeftModel.from_pretrained(model, str(path))
    except (RuntimeError, ValueError, KeyError) as e:  # shapes or module names that differ
        raise CheckpointError(
            f"the adapter in {str(path)!r} does not fit this model: {str(e).splitlines()[0]}"
        ) from None


def merge_adapter(base: str | Path, adapter: str | Path, output: str | Path) -> None:
    """Fold the adapter into the base model's weights (W + alpha/r * B A) and write a normal
    model directory: weights, config, tokenizer and generation defaults."""
    base, adapter, output = Path(base), Path(adapter), Path(output)
    if output.resolve() in (base.resolve(), adapter.resolve()):
        raise CheckpointError(
            f"--output {str(output)!r} is an input directory; give a new one so inputs are kept"
        )
    bundle = load_pretrained(base)
    merged = load_adapter(bundle.model, adapter).merge_and_unload()
    if not isinstance(merged, Transformer):
        raise TypeError(f"merging gave a {type(merged).__name__}, not a Transformer")
    save_pretrained(merged, bundle.tokenizer, output, bundle.generation_config)
