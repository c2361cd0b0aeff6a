"""`fireside serve`: the composition root. It wires the API (`fireside.api`), the chat app
(`fireside.app`, which builds on `api`) and the page together over a local engine or, as a
gateway, over `fireside worker` processes; every import points down from here.

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

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from fireside.api.app import create_app
from fireside.api.hosts import WILDCARD_BINDS
from fireside.api.served import ServedModel
from fireside.engine.loading import (
    engine_config_for,
    parse_loras,
    resolve_device,
    resolve_model_dir,
    served_name,
    start_engine,
)
from fireside.errors import FiresideError
from fireside.settings import Settings

if TYPE_CHECKING:
    from fireside.engine import EngineConfig

log = logging.getLogger(__name__)


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
    from fireside.model.pretrained import uses_tools

    loaded = await start_engine(model_dir, name, device, engine_config, loras, quantize)
    pre, engine = loaded.pretrained, loaded.engine
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


async def load_remote(settings: Settings, name: str) -> ServedModel:
    """A gateway's model: its workers' tokenizer and template, generation over gRPC."""
    from fireside.worker.client import (
        RemoteEngine,
        WorkerPool,
        channel_credentials,
        remote_tokenizer,
    )

    credentials = channel_credentials(settings.worker_ca, settings.worker_cert, settings.worker_key)
    pool = WorkerPool(settings.worker_addresses(), credentials, model=name)
    await pool.start()
    try:
        info = await pool.wait_for_model()
    except BaseException:
        await pool.close()
        raise
    log.info("gateway: %s on %d worker(s)", name, len(pool.workers))
    return ServedModel(
        engine=RemoteEngine(pool, info),
        tokenizer=remote_tokenizer(info),
        name=name,
        eos_token_ids=list(info.eos_token_ids),
        vocab_size=info.vocab_size,
        tools=info.tools,
        close=pool.close,
    )


def _gateway_name(settings: Settings) -> str:
    from fireside.worker.client import channel_credentials, wait_for_model_name

    if settings.served_model_name:
        return settings.served_model_name
    credentials = channel_credentials(settings.worker_ca, settings.worker_cert, settings.worker_key)
    return wait_for_model_name(settings.worker_addresses(), credentials)


def build_app(settings: Settings, engine_config: EngineConfig | None = None) -> FastAPI:
    """The app for these settings (engine sized by them unless `engine_config` is given); the
    model loads once the server is listening. With --workers: a gateway, no model here."""
    load: Callable[[], Awaitable[ServedModel]]
    load_dir: Callable[[Path], Awaitable[ServedModel]] | None
    if settings.worker_addresses():
        if settings.lora or settings.model:
            raise FiresideError(
                "--workers: the workers hold the model; give --model and --lora to them"
            )
        name = _gateway_name(settings)
        load, load_dir = (lambda: load_remote(settings, name)), None
    else:
        model_dir = resolve_model_dir(settings)
        name = served_name(settings, model_dir)
        config = engine_config or engine_config_for(settings)
        loras = parse_loras(settings.lora)
        quantize = settings.quantize
        if quantize is not None:
            from fireside.model.quantized import check_can_quantize

            # Refused before the server listens: CUDA, or kernels not built (named).
            check_can_quantize(quantize, resolve_device(settings.device))
        load = lambda: load_served(  # noqa: E731
            model_dir, name, settings.device, config, loras, quantize
        )
        load_dir = lambda path: load_served(  # noqa: E731
            path, name, settings.device, config, quantize=quantize
        )
    if settings.v1_requires_key() and settings.api_key is None and not settings.app:
        # Personal keys come with the chat app: without it nothing could ever call /v1.
        raise FiresideError(
            f"the server listens on {settings.host}, beyond loopback, where /v1 needs a key: "
            "give --api-key (FIRESIDE_API_KEY), or set FIRESIDE_AUTH=optional to serve it "
            "to anyone who can reach it"
        )
    extensions = []
    if settings.app:
        # A URL no driver serves stops start-up with one line, not a traceback at first use.
        from fireside.store.urls import async_database_url

        async_database_url(settings.resolved_database_url())
        # `fireside serve` is where the layers meet: the chat app (which builds on `api`)
        # is plugged in here, so nothing else in `api` knows it.
        from fireside.app import ChatApp

        extensions.append(ChatApp(settings))
    return create_app(
        name,
        load,
        api_key=settings.api_key,
        extensions=extensions,
        allowed_hosts=settings.resolved_allowed_hosts(),
        load_dir=load_dir,
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from fireside import logs
    from fireside.api.http_server import uvicorn_options
    from fireside.tools import python_tool_off_reason

    options = uvicorn_options(settings)
    logs.configure(settings.log_format, settings.log_level)
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
    uvicorn.run(app, **options)
