"""From settings to a running engine: the model path, the device, the engine's sizes.

Shared by `fireside serve` (a local model) and `fireside worker`; nothing here imports the web
stack, so a worker on a GPU image needs only torch and friends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fireside.errors import CheckpointError, FiresideError
from fireside.settings import Settings

if TYPE_CHECKING:
    from fireside.engine import Engine, EngineConfig
    from fireside.model.pretrained import Pretrained


log = logging.getLogger(__name__)


def resolve_model_dir(settings: Settings) -> Path:
    from fireside.model.gguf import find_gguf
    from fireside.model.pretrained import default_model_dir

    path = Path(settings.model) if settings.model else default_model_dir()
    if not (path / "config.json").is_file() and find_gguf(path) is None:
        raise CheckpointError(
            f"{str(path)!r} is not a model: it has no config.json (an HF model directory) "
            "and is not a GGUF file"
        )
    return path


def served_name(settings: Settings, model_dir: Path) -> str:
    """--served-model-name, else the directory's (or GGUF file's) name."""
    return settings.served_model_name or (model_dir.stem if model_dir.is_file() else model_dir.name)


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def engine_config_for(settings: Settings) -> EngineConfig:
    from fireside.engine import EngineConfig

    return EngineConfig(
        max_num_seqs=settings.max_num_seqs,
        max_model_len=settings.max_model_len,
        kv_cache_bytes=int(settings.kv_cache_gib * 2**30),
        pack_weights_for_batch=16 if settings.pack_weights else None,
    )


def parse_loras(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """`--lora NAME=DIR` values; a malformed one stops the server before it starts."""
    loras = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise FiresideError(f"--lora {spec!r}: give NAME=DIR (a PEFT adapter directory)")
        loras.append((name, Path(path).expanduser()))
    return loras


@dataclass
class LoadedEngine:
    pretrained: Pretrained
    engine: Engine


async def start_engine(
    model_dir: Path,
    name: str,
    device: str = "auto",
    engine_config: EngineConfig | None = None,
    loras: Sequence[tuple[str, Path]] = (),
    quantize: str | None = None,
) -> LoadedEngine:
    """Weights, tokenizer and a started engine for one model directory, with the LoRA
    adapters `loras` (name, directory) served beside it; the weights quantized at load when
    `quantize` names a scheme ("int8", "int4")."""
    from fireside.engine import Engine
    from fireside.model import load_pretrained

    pre = await asyncio.to_thread(load_pretrained, model_dir, resolve_device(device))
    if quantize is not None:
        from fireside.model import quantized

        fp32_bytes = sum(p.numel() * p.element_size() for p in pre.model.parameters())
        await asyncio.to_thread(quantized.quantize_model, pre.model, quantize)
        log.info("%s", quantized.describe(pre.model, quantize, fp32_bytes))
    engine = Engine.from_pretrained(pre, engine_config)
    for lora_name, path in loras:
        await asyncio.to_thread(engine.adapters.load, lora_name, path, (name,))
    await engine.start()
    return LoadedEngine(pre, engine)
