"""A model directory as one object: weights, tokenizer and generation defaults, checked together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fireside.errors import CheckpointError, TokenizerError
from fireside.model.checkpoint import load_model, save_model, write_json
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer


@dataclass
class Pretrained:
    model: Transformer
    tokenizer: Tokenizer
    generation_config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def stop_token_ids(self) -> list[int]:
        """Tokens that end a turn: generation_config's eos ids, else config's, else the tokenizer's."""
        eos = self.generation_config.get("eos_token_id", self.model.config.eos_token_id)
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids and self.tokenizer.eos_id is not None:
            ids = [self.tokenizer.eos_id]
        return ids

    @property
    def context_length(self) -> int:
        return self.model.config.max_position_embeddings


def default_model_dir() -> Path:
    """The model bundled with Fireside, used by `fireside serve` and `fireside chat` when no
    --model is given."""
    path = Path(__file__).resolve().parent.parent / "assets" / "fireside-tiny"
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"no bundled model at {str(path)!r} (this install has none yet); "
            "pass --model DIR with a model directory (config.json, safetensors, tokenizer.json) "
            "or --model FILE.gguf"
        )
    return path


def uses_tools(generation_config: dict[str, Any]) -> bool:
    """Whether the model was trained to call Fireside's built-in tools: `"fireside_tools":
    true` in its generation_config.json turns them on by default in `fireside chat`."""
    return generation_config.get("fireside_tools") is True


def check_tokenizer_matches(tokenizer: Tokenizer, vocab_size: int, where: str) -> None:
    # A tokenizer smaller than the embedding is normal (rows padded to a multiple of 64/128);
    # a larger one would index past the embedding table.
    if tokenizer.vocab_size > vocab_size:
        raise TokenizerError(
            f"the tokenizer in {where!r} has {tokenizer.vocab_size} tokens but the model's "
            f"embedding has {vocab_size} rows: tokenizer and model do not belong together"
        )


def load_pretrained(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Pretrained:
    """An HF-format model directory, or a GGUF file (a directory holding one .gguf too)."""
    from fireside.model.gguf import find_gguf, load_gguf

    gguf_file = find_gguf(path)
    if gguf_file is not None:
        return load_gguf(gguf_file, device=device, dtype=dtype)
    path = Path(path)
    model = load_model(path, device=device, dtype=dtype)
    tokenizer = Tokenizer.from_dir(path)
    check_tokenizer_matches(tokenizer, model.config.vocab_size, str(path))
    gen: dict[str, Any] = {}
    if (path / "generation_config.json").is_file():
        gen = json.loads((path / "generation_config.json").read_text())
    return Pretrained(model=model, tokenizer=tokenizer, generation_config=gen, path=path)


def save_pretrained(
    model: Transformer,
    tokenizer: Tokenizer,
    path: str | Path,
    generation_config: dict[str, Any] | None = None,
) -> None:
    """Write a complete HF-format model directory that Fireside and transformers both load."""
    path = Path(path)
    check_tokenizer_matches(tokenizer, model.config.vocab_size, str(path))
    cfg = model.config
    cfg.bos_token_id = tokenizer.bos_id if cfg.bos_token_id is None else cfg.bos_token_id
    cfg.eos_token_id = tokenizer.eos_id if cfg.eos_token_id is None else cfg.eos_token_id
    cfg.pad_token_id = tokenizer.token_id(tokenizer.special.get("pad_token") or "")
    save_model(model, path)
    tokenizer.save(path)
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    gen.update(generation_config or {})
    write_json(path / "generation_config.json", gen)
