"""/api/models (the local model and every connection's) and /api/admin/connections (the
OpenAI-compatible endpoints an admin connected; keys go in, never come out)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field, field_validator

from fireside.api.state import AppStateDep
from fireside.app.connections import (
    KEEP,
    AdminConnection,
    Endpoint,
    model_id,
    replace_admin_connections,
)
from fireside.app.deps import DB, AdminUser, ChatStateDep, CurrentUser
from fireside.app.schemas import Page, Strict

router = APIRouter(tags=["models"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ModelPublic(BaseModel):
    id: str  # what a conversation's `model` names: the local id, or "<connection>/<model>"
    source: Literal["local", "connection"]
    ready: bool
    connection: str | None = None


class ConnectionProblem(BaseModel):
    connection: str
    error: str


class ModelList(Page[ModelPublic]):
    errors: list[ConnectionProblem] = Field(
        default_factory=list
    )  # connections whose models could not be listed


@router.get("/models", response_model=ModelList)
async def list_models(
    user: CurrentUser, db: DB, state: AppStateDep, chat: ChatStateDep
) -> ModelList:
    local = ModelPublic(id=state.model_name, source="local", ready=state.served is not None)
    listed = await chat.connections.list_models(await chat.connections.endpoints(db))
    return ModelList(
        data=[local]
        + [
            ModelPublic(
                id=model_id(e.endpoint, m),
                source="connection",
                ready=True,
                connection=e.endpoint.name,
            )
            for e in listed
            for m in e.models
        ],
        errors=[
            ConnectionProblem(connection=e.endpoint.name, error=e.error) for e in listed if e.error
        ],
    )


class ConnectionIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    base_url: str = Field(max_length=2000)  # as the openai client takes it: http://host/v1
    api_key: str | None = Field(default=None, min_length=1, max_length=4096)
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=1000
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http:// or https:// URL")
        return v.rstrip("/")


class ConnectionPublic(BaseModel):
    name: str
    base_url: str
    has_api_key: bool
    models: list[str] | None
    source: Literal["settings", "admin"]  # settings' connections change in settings only


def _public(e: Endpoint) -> ConnectionPublic:
    return ConnectionPublic(
        name=e.name,
        base_url=e.base_url,
        has_api_key=e.api_key is not None,
        models=e.models,
        source=e.source,
    )


@router.get("/admin/connections", response_model=Page[ConnectionPublic], tags=["admin"])
async def get_connections(_: AdminUser, db: DB, chat: ChatStateDep) -> Page[ConnectionPublic]:
    return Page(data=[_public(e) for e in await chat.connections.endpoints(db)])


@router.put("/admin/connections", response_model=Page[ConnectionPublic], tags=["admin"])
async def put_connections(
    body: Annotated[list[ConnectionIn], Body(max_length=100)],
    _: AdminUser,
    db: DB,
    chat: ChatStateDep,
) -> Page[ConnectionPublic]:
    """Replaces the admin's connections. An entry without `api_key` keeps the key stored
    under its name (so a list read with GET can be sent back); `"api_key": null` removes it."""
    wanted = [
        AdminConnection(
            c.name,
            c.base_url,
            c.api_key if "api_key" in c.model_fields_set else KEEP,
            c.models,
        )
        for c in body
    ]
    await replace_admin_connections(db, chat.connections, wanted)
    return Page(data=[_public(e) for e in await chat.connections.endpoints(db)])
