"""`fireside serve`: load a model directory into the engine and run the API on uvicorn.

Deployment modes, by what the settings say (fireside.settings.Settings):
- Private (the default: bound to 127.0.0.1): sign-up open, /v1 open; only this machine
  reaches the server.
- Shared (bound beyond loopback, e.g. --host 0.0.0.0, or guarded with --api-key): sign-ups
  wait for an admin's approval (the first account is the admin) and /v1 needs a key, the
  --api-key or a user's personal key. FIRESIDE_SIGNUP=open and FIRESIDE_AUTH=optional, set
  explicitly, open them again.
- API only (FIRESIDE_APP=0): no accounts; beyond loopback it needs --api-key (or
  FIRESIDE_AUTH=optional) to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from fireside.api.app import create_app
from fireside.api.hosts import WILDCARD_BINDS
from fireside.api.served import ServedModel
from fireside.errors import CheckpointError, FiresideError
from fireside.model.pretrained import default_model_dir
from fireside.settings import Settings

if TYPE_CHECKING:
    from fireside.engine import EngineConfig

log = logging.getLogger(__name__)


def resolve_model_dir(settings: Settings) -> Path:
    from fireside.model.gguf import find_gguf

    path = Path(settings.model) if settings.model else default_model_dir()
    if not (path / "config.json").is_file() and find_gguf(path) is None:
        raise CheckpointError(
            f"{str(path)!r} is not a model: it has no config.json (an HF model directory) "
            "and is not a GGUF file"
        )
    return path


def _device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


async def load_served(
    model_dir: Path,
    name: str,
    device: str = "auto",
    engine_config: EngineConfig | None = None,
    loras: Sequence[tuple[str, Path]] = (),
    quantize: str | None = None,
) -> ServedModel:
    """Weights, tokenizer and a started engine for one model directory, with the LoRA
    adapters `loras` (name, directory) served beside it; weights quantized at load when
    `quantize` names a scheme ("int8", "int4")."""
    from fireside.engine import Engine
    from fireside.model import load_pretrained
    from fireside.model.pretrained import uses_tools

    pre = await asyncio.to_thread(load_pretrained, model_dir, _device(device))
    if quantize is not None:
        from fireside.model import quantized

        fp32_bytes = sum(p.numel() * p.element_size() for p in pre.model.parameters())
        await asyncio.to_thread(quantized.quantize_model, pre.model, quantize)
        log.info("%s", quantized.describe(pre.model, quantize, fp32_bytes))
    engine = Engine.from_pretrained(pre, engine_config)
    for lora_name, path in loras:
        await asyncio.to_thread(engine.adapters.load, lora_name, path, (name,))
    await engine.start()
    return ServedModel(
        engine=engine,
        tokenizer=pre.tokenizer,
        name=name,
        eos_token_ids=pre.stop_token_ids,
        vocab_size=pre.model.config.vocab_size,
        root=str(model_dir),
        tools=uses_tools(pre.generation_config),
        close=engine.shutdown,
        adapters=engine.adapters,
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


def engine_config_for(settings: Settings) -> EngineConfig:
    from fireside.engine import EngineConfig

    return EngineConfig(
        max_num_seqs=settings.max_num_seqs,
        max_model_len=settings.max_model_len,
        kv_cache_bytes=int(settings.kv_cache_gib * 2**30),
        pack_weights_for_batch=16 if settings.pack_weights else None,
    )


def build_app(settings: Settings, engine_config: EngineConfig | None = None) -> FastAPI:
    """The app for these settings (engine sized by them unless `engine_config` is given); the
    model loads once the server is listening."""
    model_dir = resolve_model_dir(settings)
    name = settings.served_model_name or (model_dir.stem if model_dir.is_file() else model_dir.name)
    engine_config = engine_config or engine_config_for(settings)
    loras = parse_loras(settings.lora)
    if settings.quantize is not None:
        from fireside.model.quantized import check_can_quantize

        # Refused before the server listens: CUDA, or kernels not built (named).
        check_can_quantize(settings.quantize, _device(settings.device))
    if settings.v1_requires_key() and settings.api_key is None and not settings.app:
        # Personal keys come with the chat app: without it nothing could ever call /v1.
        raise FiresideError(
            f"the server listens on {settings.host}, beyond loopback, where /v1 needs a key: "
            "give --api-key (FIRESIDE_API_KEY), or set FIRESIDE_AUTH=optional to serve it "
            "to anyone who can reach it"
        )
    extensions = []
    if settings.app:
        # `fireside serve` is where the layers meet: the chat app (which builds on `api`)
        # is plugged in here, so nothing else in `api` knows it.
        from fireside.app import ChatApp

        extensions.append(ChatApp(settings))
    return create_app(
        name,
        lambda: load_served(
            model_dir, name, settings.device, engine_config, loras, settings.quantize
        ),
        api_key=settings.api_key,
        extensions=extensions,
        allowed_hosts=settings.resolved_allowed_hosts(),
        load_dir=lambda path: load_served(
            path, name, settings.device, engine_config, quantize=settings.quantize
        ),
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from fireside.tools import python_tool_off_reason

    # Fireside's own INFO lines (the model served, its resident weights when quantized) print
    # beside uvicorn's, in its format; without a handler Python shows warnings alone.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logging.getLogger("fireside").addHandler(handler)
    logging.getLogger("fireside").setLevel(logging.INFO)
    app = build_app(settings)
    # Checked before the first request: where no sandbox can be made, the python tool is off
    # (one warning saying why and how to enable it) and never runs unsandboxed.
    python_tool_off_reason()
    if not settings.allowed_hosts and settings.host in WILDCARD_BINDS:
        log.warning(
            "bound to %r but FIRESIDE_ALLOWED_HOSTS is not set: only localhost names are "
            "answered; set it to the public host name(s)",
            settings.host,
        )
    # Open streams would hold a shutdown forever; after the grace period they are cut.
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10
    )
