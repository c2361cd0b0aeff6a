"""Connections to OpenAI-compatible endpoints (vLLM, llama.cpp, Ollama, another Fireside):
where they come from, their keys sealed at rest, their model lists, and answers streamed
from them for the generation task.

A connection's model is offered as `<connection>/<model>`, so two endpoints serving models
of the same name stay apart. Connections come from settings (FIRESIDE_CONNECTIONS, read
only here) and from admins (the database, keys encrypted with a key derived from the
server's secret).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal, cast

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import APIError
from fireside.api.schemas import ChatChunkChoice, ChatCompletionChunk, ChatDelta, Usage
from fireside.app.sealing import InvalidToken, sealer
from fireside.settings import Settings
from fireside.store import connections as store
from fireside.store.models import Connection

# Listing models is on the path of opening the app: an endpoint that is down must not hold
# it up for long.
LIST_TIMEOUT_S = 3.0
# Generating: the first byte can take a while on a busy endpoint; then chunks flow.
GENERATE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    api_key: str | None
    models: list[str] | None  # None: whatever its /models lists
    source: Literal["settings", "admin"]

    def client(self, timeout: float) -> AsyncOpenAI:
        # Endpoints without keys (a local vLLM or Ollama) still need the client to send one.
        return AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or "none", timeout=timeout, max_retries=0
        )


@dataclass
class EndpointModels:
    endpoint: Endpoint
    models: list[str]
    error: str | None = None  # why its models could not be listed


def endpoint_error(e: Exception) -> str:
    # Users read these in the model list: say what went wrong, not where the endpoint lives.
    if isinstance(e, openai.APIStatusError):
        return f"the endpoint answered {e.status_code}: {e.message}"
    if isinstance(e, openai.APITimeoutError):
        return "the endpoint did not answer in time"
    if isinstance(e, openai.APIConnectionError):
        return "the endpoint cannot be reached"
    return f"the endpoint failed: {type(e).__name__}"


class Connections:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sealer = sealer(settings.resolved_secret_key(), "connection-api-keys")

    def seal(self, api_key: str) -> bytes:
        return self.sealer.encrypt(api_key.encode())

    def unseal(self, sealed: bytes) -> str | None:
        try:
            return self.sealer.decrypt(sealed).decode()
        except InvalidToken:  # sealed under another secret: the admin must enter it again
            return None

    def configured(self) -> list[Endpoint]:
        return [
            Endpoint(
                c.name,
                c.base_url,
                c.api_key.get_secret_value() if c.api_key else None,
                c.models,
                "settings",
            )
            for c in self.settings.connections
        ]

    async def endpoints(self, db: AsyncSession) -> list[Endpoint]:
        """Settings' connections first; an admin's of the same name cannot shadow them."""
        found = self.configured()
        taken = {e.name for e in found}
        for row in await store.all_connections(db):
            if row.enabled and row.name not in taken:
                key = self.unseal(row.api_key_encrypted) if row.api_key_encrypted else None
                found.append(Endpoint(row.name, row.base_url, key, row.models, "admin"))
        return found

    async def list_models(self, endpoints: list[Endpoint]) -> list[EndpointModels]:
        """Each endpoint's models, asked of all at once; one that fails says why."""
        return list(await asyncio.gather(*(self._models_of(e) for e in endpoints)))

    async def _models_of(self, endpoint: Endpoint) -> EndpointModels:
        if endpoint.models is not None:
            return EndpointModels(endpoint, list(endpoint.models))
        try:
            async with endpoint.client(LIST_TIMEOUT_S) as client:
                page = await client.models.list()
            return EndpointModels(endpoint, [m.id for m in page.data])
        except (openai.OpenAIError, ValueError) as e:
            return EndpointModels(endpoint, [], endpoint_error(e))

    async def resolve(self, db: AsyncSession, model: str) -> tuple[Endpoint, str] | None:
        """The endpoint and its own model id for `<connection>/<model>`, or None."""
        name, slash, remote = model.partition("/")
        if not slash or not remote:
            return None
        endpoint = next((e for e in await self.endpoints(db) if e.name == name), None)
        return (endpoint, remote) if endpoint is not None else None


def model_id(endpoint: Endpoint, model: str) -> str:
    return f"{endpoint.name}/{model}"


@dataclass
class RemoteMessage:
    role: str
    content: str


class RemoteJob:
    """One answer streamed from a connection's /chat/completions, as the engine's ChatJob
    streams one: the generation task reads both alike."""

    def __init__(
        self,
        endpoint: Endpoint,
        model: str,
        messages: list[RemoteMessage],
        temperature: float | None,
        max_tokens: int,
    ) -> None:
        self.endpoint, self.model, self.messages = endpoint, model, messages
        self.temperature, self.max_tokens = temperature, max_tokens
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.name = model_id(endpoint, model)

    async def stream(self) -> AsyncIterator[ChatCompletionChunk]:
        # Stopping closes this generator, which closes the HTTP request: the endpoint
        # sees the client leave and ends the answer there too.
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        try:
            async with self.endpoint.client(GENERATE_TIMEOUT_S) as client:
                stream = await client.chat.completions.create(
                    model=self.model,
                    messages=[
                        cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content})
                        for m in self.messages
                    ],
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async with stream:
                    async for chunk in stream:
                        yield self._convert(chunk)
        except openai.OpenAIError as e:
            raise APIError(
                f"the connection {self.endpoint.name!r} failed: {endpoint_error(e)}",
                502,
                type="upstream_error",
                code="connection_failed",
            ) from None

    def _convert(self, chunk: openai.types.chat.ChatCompletionChunk) -> ChatCompletionChunk:
        usage = None
        if chunk.usage is not None:
            usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
                total_tokens=chunk.usage.total_tokens,
            )
        choices = [
            ChatChunkChoice(index=c.index, delta=ChatDelta(content=c.delta.content))
            for c in chunk.choices
        ]
        return ChatCompletionChunk(id=self.id, model=self.name, choices=choices, usage=usage)


KEEP = object()  # an admin's update that leaves a connection's stored key as it is


@dataclass
class AdminConnection:
    name: str
    base_url: str
    api_key: str | object | None  # a new key, None to remove it, or KEEP
    models: list[str] | None


async def replace_admin_connections(
    db: AsyncSession, connections: Connections, wanted: list[AdminConnection]
) -> None:
    """The admin's connections become `wanted`, in one transaction. Keys are sealed before
    they are stored; an entry without `api_key` keeps the key stored under its name."""
    names = [c.name for c in wanted]
    if len(set(names)) != len(names):
        raise APIError("two connections have the same name", 400, param="name")
    configured = {e.name for e in connections.configured()}
    if clash := sorted(configured.intersection(names)):
        raise APIError(
            f"the connection {clash[0]!r} is set in FIRESIDE_CONNECTIONS; change it there",
            409,
            type="conflict_error",
            code="conflict",
        )
    stored = {row.name: row.api_key_encrypted for row in await store.all_connections(db)}
    rows = []
    for c in wanted:
        if c.api_key is KEEP:
            sealed = stored.get(c.name)
        else:
            sealed = connections.seal(c.api_key) if isinstance(c.api_key, str) else None
        rows.append(
            Connection(name=c.name, base_url=c.base_url, api_key_encrypted=sealed, models=c.models)
        )
    await store.replace_connections(db, rows)
    await db.commit()
