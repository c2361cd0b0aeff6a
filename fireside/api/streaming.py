"""Server-sent events as OpenAI frames them: `data: <json>` blocks, ended by `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from pydantic import BaseModel

from fireside.api.errors import APIError

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(payload: BaseModel | dict[str, object]) -> str:
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json(exclude_none=True)
    else:
        data = json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


async def sse_stream(events: AsyncIterator[BaseModel]) -> AsyncIterator[str]:
    """Frames events; an error after the stream began is sent as an error event, then [DONE]."""
    try:
        async for event in events:
            yield sse_event(event)
    except APIError as e:
        yield sse_event(e.body())
    yield DONE
