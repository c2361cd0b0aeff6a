"""The OpenAI routes: thin — parse, hand to a job, return its model or its event stream."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from fireside.api.chat import ChatJob
from fireside.api.completions import CompletionJob
from fireside.api.errors import APIError
from fireside.api.generation import cancel_on_disconnect
from fireside.api.metrics import CONTENT_TYPE
from fireside.api.routes_lora import adapter_card
from fireside.api.sampling import cache_salt
from fireside.api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Health,
    ModelCard,
    ModelList,
)
from fireside.api.served import ServedModel
from fireside.api.state import AppState, app_state, caller, served_model
from fireside.api.streaming import SSE_HEADERS, sse_stream

router = APIRouter()
Served = Annotated[ServedModel, Depends(served_model)]
State = Annotated[AppState, Depends(app_state)]

# One server-sent event (OpenAPI before 3.2 describes each event with `schema`): `data` holds
# a JSON chunk, or `[DONE]` at the end.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
    },
    "required": ["data"],
}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer, or with `stream: true` server-sent events ending in `data: [DONE]`",
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
    }
}


@router.post(
    "/v1/chat/completions", response_model=ChatCompletion, responses=_STREAM_DOC, tags=["openai"]
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, served: Served, state: State
) -> Any:
    body.cache_salt = cache_salt(caller(request).identity, body.cache_salt)
    # Rendering and grammar compiling take a while on big vocabularies: off the event loop.
    job = await asyncio.to_thread(ChatJob, body, served, state.metrics, served.token_text)
    if body.stream:
        chunks = await cancel_on_disconnect(request, job.stream())
        return StreamingResponse(
            sse_stream(chunks), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return await cancel_on_disconnect(request, job.run())


@router.post("/v1/completions", response_model=Completion, responses=_STREAM_DOC, tags=["openai"])
async def completions(
    body: CompletionRequest, request: Request, served: Served, state: State
) -> Any:
    body.cache_salt = cache_salt(caller(request).identity, body.cache_salt)
    job = await asyncio.to_thread(CompletionJob, body, served, state.metrics, served.token_text)
    if body.stream:
        chunks = await cancel_on_disconnect(request, job.stream())
        return StreamingResponse(
            sse_stream(chunks), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return await cancel_on_disconnect(request, job.run())


def _card(served: ServedModel) -> ModelCard:
    return ModelCard(
        id=served.name,
        created=served.created,
        root=served.root,
        max_model_len=served.context_length,
    )


@router.get("/v1/models", response_model=ModelList, tags=["openai"])
async def list_models(served: Served) -> ModelList:
    """The base model, then each LoRA adapter served beside it (vLLM lists them so too)."""
    adapters = served.adapters.list() if served.adapters is not None else []
    return ModelList(data=[_card(served), *(adapter_card(served, a) for a in adapters)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, tags=["openai"])
async def get_model(model_id: str, served: Served) -> ModelCard:
    adapter = served.adapters.get(model_id) if served.adapters is not None else None
    if adapter is not None:
        return adapter_card(served, adapter)
    if model_id != served.name:
        raise APIError(
            f"the model {model_id!r} does not exist; this server serves {served.name!r}",
            404,
            type="not_found_error",
            param="model",
            code="model_not_found",
        )
    return _card(served)


@router.get("/health", response_model=Health, tags=["ops"])
async def health(state: State) -> Health:
    state.ready()
    return Health()


@router.get("/livez", response_model=Health, tags=["ops"])
async def livez() -> Health:
    """The process is up and answering: a liveness probe (never the model's state, so a slow
    load is not a restart)."""
    return Health()


@router.get("/readyz", response_model=Health, tags=["ops"])
async def readyz(state: State) -> Health:
    """Ready for traffic: the model is loaded and its engine healthy. A gateway's engine is
    its workers' client, healthy while at least one worker is (EngineClient.is_healthy);
    else 503."""
    state.ready()
    return Health()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    tags=["ops"],
)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
