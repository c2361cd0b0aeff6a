"""Loading and unloading LoRA adapters at run time, in vLLM's shapes:

    POST /v1/load_lora_adapter    {"lora_name", "lora_path"}   -> 200, the adapter's model card
    POST /v1/unload_lora_adapter  {"lora_name"}                -> 200

Both change what the server runs and read the server's disk, so they take only the server's
API key or an administrator's personal key (403 otherwise, 401 without a key), whether or not
/v1 needs a key for inference. A loaded adapter is listed in /v1/models and served as the model
of that name; a name loaded again is replaced (requests already running keep the old one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from fireside.api.errors import APIError, bad_request
from fireside.api.schemas import LoadLoraAdapter, ModelCard, UnloadLoraAdapter
from fireside.api.served import ServedModel
from fireside.api.state import ANONYMOUS, caller, served_model
from fireside.model.adapters import Adapter, AdapterError, AdapterRegistry

router = APIRouter(tags=["lora"])
Served = Annotated[ServedModel, Depends(served_model)]


def adapter_card(served: ServedModel, adapter: Adapter) -> ModelCard:
    return ModelCard(
        id=adapter.name,
        created=served.created,
        root=str(adapter.path),
        parent=served.name,
        max_model_len=served.context_length,
    )


def _admin_registry(request: Request, served: ServedModel) -> AdapterRegistry:
    who = caller(request)
    if who is ANONYMOUS:
        raise APIError(
            "loading adapters needs the server's API key or an administrator's key: send it as "
            "'Authorization: Bearer <key>'",
            401,
            type="authentication_error",
            code="invalid_api_key",
        )
    if not who.admin:
        raise APIError(
            "this needs the server's API key or an administrator's key",
            403,
            type="permission_error",
            code="forbidden",
        )
    if served.adapters is None:
        raise bad_request("this server's engine does not serve LoRA adapters", "lora_name")
    return served.adapters


@router.post("/v1/load_lora_adapter", response_model=ModelCard)
async def load_lora_adapter(body: LoadLoraAdapter, request: Request, served: Served) -> ModelCard:
    registry = _admin_registry(request, served)
    try:
        adapter = await asyncio.to_thread(
            registry.load, body.lora_name, Path(body.lora_path), (served.name,)
        )
    except AdapterError as e:
        raise bad_request(str(e), "lora_path") from None
    return adapter_card(served, adapter)


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(
    body: UnloadLoraAdapter, request: Request, served: Served
) -> dict[str, str]:
    registry = _admin_registry(request, served)
    if not registry.unload(body.lora_name):
        raise APIError(
            f"no LoRA adapter named {body.lora_name!r} is loaded",
            404,
            type="not_found_error",
            param="lora_name",
            code="model_not_found",
        )
    return {"unloaded": body.lora_name}
