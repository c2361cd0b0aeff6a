"""/api/admin: users (approve, disable, roles), token usage, and the training export.
Every route takes AdminUser: a non-admin gets 403."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from fireside.app.deps import DB, AdminUser
from fireside.app.errors import conflict, not_found
from fireside.app.export import export_lines
from fireside.app.schemas import Page, Strict, UserPublic
from fireside.store import accounts, admin

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
