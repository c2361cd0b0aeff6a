"""/api/admin: users (approve, disable, roles), token usage, and the training export.
Every route takes AdminUser: a non-admin gets 403."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from fireside.api.errors import bad_request
from fireside.app.accounts import signup_policy
from fireside.app.deps import DB, AdminUser, ChatStateDep
from fireside.app.errors import conflict, not_found
from fireside.app.export import export_lines
from fireside.app.schemas import Page, Strict, UserPublic
from fireside.settings import SignupPolicy
from fireside.store import accounts, admin, connections
from fireside.store.models import Connection

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/users", response_model=Page[UserPublic])
async def list_users(
    _: AdminUser,
    db: DB,
    cursor: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[UserPublic]:
    rows = await admin.users_page(db, limit + 1, cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[UserPublic.model_validate(u) for u in rows],
        next_cursor=rows[-1].email if more else None,
    )


class UserUpdate(Strict):
    role: Literal["user", "admin"] | None = None
    status: Literal["active", "pending", "disabled"] | None = None  # approve = active


@router.patch("/users/{user_id}", response_model=UserPublic)
async def update_user(body: UserUpdate, user_id: uuid.UUID, me: AdminUser, db: DB) -> UserPublic:
    target = await admin.user(db, user_id)
    if target is None:
        raise not_found("user")
    demoted = body.role == "user" or body.status in ("pending", "disabled")
    if demoted and target.role == "admin" and await admin.count_admins(db) <= 1:
        raise conflict("this is the last active administrator")
    if body.role is not None:
        target.role = body.role
    if body.status is not None:
        target.status = body.status
        if body.status != "active":  # a disabled account is logged out everywhere at once
            await accounts.delete_sessions_except(db, target.id, None)
    await db.commit()
    return UserPublic.model_validate(target)


class UsageRow(BaseModel):
    user_id: uuid.UUID
    email: str
    model: str
    generations: int
    prompt_tokens: int
    completion_tokens: int


@router.get("/usage", response_model=Page[UsageRow])
async def usage(_: AdminUser, db: DB) -> Page[UsageRow]:
    rows = await admin.usage_totals(db)
    return Page(
        data=[
            UsageRow(
                user_id=u, email=e, model=m, generations=n, prompt_tokens=p, completion_tokens=c
            )
            for u, e, m, n, p, c in rows
        ]
    )


@router.get(
    "/feedback/export",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSONL"}},
)
async def export_feedback(
    _: AdminUser, db: DB, format: Literal["dpo", "sft"] = "dpo"
) -> PlainTextResponse:
    """What `fireside train dpo` (format=dpo) or `fireside train sft` (format=sft) reads,
    from the chats of users who consented to training."""
    body = "".join(await export_lines(db, format))
    return PlainTextResponse(body, media_type="application/x-ndjson")


class ConnectionIn(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    # Printable ASCII only: the URL and key go into requests, where a control character
    # (or a non-ASCII one in a header) is refused by the HTTP client, not by the endpoint.
    base_url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://[!-~]+$")
    api_key: str | None = Field(default=None, max_length=4000, pattern=r"^[!-~]+$")  # None: keep
    enabled: bool = True


class ConnectionsPut(Strict):
    data: list[ConnectionIn] = Field(max_length=100)


class ConnectionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    base_url: str
    enabled: bool
    has_key: bool  # the key itself is never shown again


def _public(c: Connection) -> ConnectionPublic:
    return ConnectionPublic(
        id=c.id,
        name=c.name,
        base_url=c.base_url,
        enabled=c.enabled,
        has_key=c.api_key_encrypted is not None,
    )


@router.get("/connections", response_model=Page[ConnectionPublic])
async def list_connections(_: AdminUser, db: DB) -> Page[ConnectionPublic]:
    return Page(data=[_public(c) for c in await connections.all_connections(db)])


@router.put("/connections", response_model=Page[ConnectionPublic])
async def put_connections(
    body: ConnectionsPut, _: AdminUser, db: DB, chat: ChatStateDep
) -> Page[ConnectionPublic]:
    """The OpenAI-compatible endpoints (vLLM, llama.cpp, Ollama, another Fireside) whose
    models the app offers as `NAME/MODEL`; keys are stored encrypted."""
    names = [c.name for c in body.data]
    if len(set(names)) != len(names):
        raise bad_request("connection names must differ", "data")
    wanted = [
        Connection(
            name=c.name,
            base_url=c.base_url.rstrip("/"),
            enabled=c.enabled,
            api_key_encrypted=chat.secrets.seal(c.api_key) if c.api_key else None,
        )
        for c in body.data
    ]
    await connections.replace_all(db, wanted)
    await db.commit()
    return Page(data=[_public(c) for c in await connections.all_connections(db)])


class ServerSettings(BaseModel):
    signup: SignupPolicy


class ServerSettingsUpdate(Strict):
    signup: SignupPolicy | None = None


@router.get("/settings", response_model=ServerSettings)
async def get_server_settings(_: AdminUser, db: DB, chat: ChatStateDep) -> ServerSettings:
    return ServerSettings(signup=await signup_policy(db, chat.settings.default_signup()))


@router.patch("/settings", response_model=ServerSettings)
async def update_server_settings(
    body: ServerSettingsUpdate, _: AdminUser, db: DB, chat: ChatStateDep
) -> ServerSettings:
    if body.signup is not None:
        await admin.set_setting(db, "signup", body.signup)
        await db.commit()
    return ServerSettings(signup=await signup_policy(db, chat.settings.default_signup()))
