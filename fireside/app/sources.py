"""Where an answer's text comes from: the locally served model (through the OpenAI routes'
ChatJob: same chat template, same checks) or an OpenAI-compatible endpoint an admin
connected (vLLM, llama.cpp, Ollama, another Fireside). The generation task reads either
the same way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx

from fireside.api.chat import ChatJob
from fireside.api.errors import APIError
from fireside.api.metrics import Metrics
from fireside.api.schemas import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    StreamOptions,
)
from fireside.api.schemas import Tool as ApiTool
from fireside.api.served import ServedModel
from fireside.app.state import ChatState
from fireside.store.models import Connection
from fireside.tools.base import tool_specs

if TYPE_CHECKING:
    from fireside.app.tool_turns import ToolStep
    from fireside.tools import Tool

log = logging.getLogger(__name__)


@dataclass
class Piece:
    text: str = ""
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens, once at the end
    tool: ToolStep | None = None  # a step of the tool loop (fireside.app.tool_turns)


class AnswerSource(Protocol):
    model: str

    def stream(self) -> AsyncGenerator[Piece, None]:
        """The answer's text as it comes; closing the iterator ends the request."""
        ...

    async def abort(self) -> None: ...


class ReadAhead:
    """An answer's pieces with the first one asked for at once: the engine starts on the prompt
    (its prefill) while the send's rows are written, rather than after their commit. Nothing is
    read from it, so nothing is sent, before the question is stored; closing it (a send that
    could not be stored) ends the request."""

    def __init__(self, pieces: AsyncGenerator[Piece, None]) -> None:
        self._pieces = pieces
        self._first: asyncio.Task[Piece] | None = asyncio.create_task(self._next())

    async def _next(self) -> Piece:
        return await anext(self._pieces)

    def __aiter__(self) -> ReadAhead:
        return self

    async def __anext__(self) -> Piece:
        first, self._first = self._first, None
        return await (first if first is not None else self._next())

    async def aclose(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            first.cancel()
            await asyncio.wait({first})
            if not first.cancelled():
                first.exception()  # retrieved: an error of an answer never begun is no one's
        await self._pieces.aclose()


class LocalSource:
    def __init__(self, job: ChatJob, served: ServedModel) -> None:
        self.job, self.served, self.model = job, served, served.label

    async def stream(self) -> AsyncGenerator[Piece, None]:
        chunks = cast(AsyncGenerator[ChatCompletionChunk, None], await self.job.stream())
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                usage = chunk.usage
                text = "".join(c.delta.content for c in chunk.choices if c.delta.content)
                if text or usage is not None:
                    yield Piece(
                        text,
                        (usage.prompt_tokens, usage.completion_tokens) if usage else None,
                    )

    async def abort(self) -> None:
        # Closing the stream aborts the engine request too; this makes sure of it.
        await self.served.engine.abort(self.job.id)


async def local_source(
    served: ServedModel,
    metrics: Metrics,
    prompt: list[ChatMessageIn],
    temperature: float | None,
    cap: int,
    tools: list[Tool] | None = None,
    salt: str | None = None,
) -> AnswerSource:
    """The served model's answer; through the tool loop when `tools` are given. `salt`: the
    prefix-cache salt of the user it answers (no one else's cached prompts are reused)."""

    def build(max_tokens: int | None) -> ChatJob:
        request = ChatCompletionRequest(
            messages=prompt,
            model=served.name,
            temperature=temperature,
            max_tokens=max_tokens,
            stream=True,
            stream_options=StreamOptions(include_usage=True),
            # Listed so that the prompt's length is checked with them in it.
            tools=[ApiTool.model_validate(t) for t in tool_specs(tools)] if tools else None,
            cache_salt=salt,
        )
        return ChatJob(request, served, metrics, served.token_text)

    try:
        job = await asyncio.to_thread(build, cap)
    except APIError as e:
        if e.code != "context_length_exceeded" or e.param != "max_tokens":
            raise
        # Less room than the cap: answer in what the context has left.
        job = await asyncio.to_thread(build, None)
    if tools:
        from fireside.app.tool_turns import ToolSource

        return ToolSource(job, served, tools)
    return LocalSource(job, served)


def upstream_error(message: str) -> APIError:
    return APIError(message, 502, type="upstream_error", code="upstream_error")


class RemoteSource:
    """Streams /chat/completions of a connected endpoint."""

    def __init__(
        self,
        connection: str,
        base_url: str,
        api_key: str | None,
        model: str,
        body: dict[str, Any],
    ) -> None:
        self.connection, self.base_url, self.api_key = connection, base_url.rstrip("/"), api_key
        self.remote_model = model
        self.model = f"{connection}/{model}"
        self.body = body

    async def stream(self) -> AsyncGenerator[Piece, None]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            **self.body,
            "model": self.remote_model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        timeout = httpx.Timeout(30.0, read=300.0)
        try:
            async with (
                httpx.AsyncClient(timeout=timeout) as client,
                client.stream(
                    "POST", f"{self.base_url}/chat/completions", json=body, headers=headers
                ) as r,
            ):
                if r.status_code != 200:
                    # The body may hold anything (the endpoint's keys, addresses, other users'
                    # requests): the admin's log gets it, the user only the status.
                    detail = (await r.aread()).decode("utf-8", "replace")[:2000]
                    log.warning(
                        "connection %r answered %d: %s", self.connection, r.status_code, detail
                    )
                    raise upstream_error(
                        f"the model service {self.connection!r} answered {r.status_code}"
                    )
                async for line in r.aiter_lines():
                    piece = _piece(line)
                    if piece is not None:
                        yield piece
        except (httpx.HTTPError, httpx.InvalidURL) as e:  # InvalidURL: a bad configured URL
            raise upstream_error(
                f"the connection {self.connection!r} failed: {type(e).__name__}"
            ) from None

    async def abort(self) -> None:
        return  # closing the stream closed the HTTP request


def _piece(line: str) -> Piece | None:
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]" or not data:
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    text = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
    usage = chunk.get("usage")
    counts = None
    if isinstance(usage, dict):
        counts = (int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
    return Piece(text, counts) if text or counts else None


async def remote_models(chat: ChatState, connection: Connection) -> tuple[list[str], str | None]:
    """The model ids a connected endpoint lists at /models, or none and why (said without
    the endpoint's address: users read it)."""
    headers = {}
    if connection.api_key_encrypted is not None:
        headers["Authorization"] = f"Bearer {chat.secrets.open(connection.api_key_encrypted)}"
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            r = await client.get(f"{connection.base_url}/models", headers=headers)
            if r.status_code != 200:
                return [], f"the endpoint answered {r.status_code}"
            return [str(m["id"]) for m in r.json().get("data", []) if "id" in m], None
    except httpx.TimeoutException:
        return [], "the endpoint did not answer in time"
    except (httpx.HTTPError, httpx.InvalidURL) as e:  # InvalidURL: a bad configured URL
        log.warning("connection %r lists no models: %s", connection.name, e)
        return [], "the endpoint cannot be reached"
    except (ValueError, KeyError, TypeError, AttributeError):
        return [], "the endpoint's model list is not an OpenAI one"
