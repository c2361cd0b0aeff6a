"""Personal API keys: shown once at creation, stored as a hash; they authorize the chat API
(/api/*) and, with FIRESIDE_AUTH=required, the OpenAI API (/v1/*) as Bearer tokens.

A key may expire (`expires_in_days`); a password change revokes them all. Only a logged-in
session makes or revokes keys: a leaked key must not be able to mint its own successors."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from fireside.api.state import Caller
from fireside.app.deps import DB, CurrentUser
from fireside.app.errors import forbidden, not_found
from fireside.app.schemas import Page, Strict
from fireside.store import accounts
from fireside.store.db import Database
from fireside.store.models import User, now

KEY_PREFIX = "fs-"

router = APIRouter(tags=["keys"])


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    # None: the key lives until revoked (or until the password changes).
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class KeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class KeyCreated(KeyPublic):
    key: str  # the only time the whole key is shown


@router.get("/keys", response_model=Page[KeyPublic])
async def list_keys(user: CurrentUser, db: DB) -> Page[KeyPublic]:
    keys = await accounts.api_keys_of(db, user.id)
    return Page(data=[KeyPublic.model_validate(k) for k in keys])


async def session_user(conn: HTTPConnection, user: CurrentUser) -> User:
    if conn.headers.get("authorization") is not None:
        raise forbidden(
            "API keys are made and revoked from a logged-in session (the web UI), "
            "not with an API key"
        )
    return user


SessionUser = Annotated[User, Depends(session_user)]


@router.post("/keys", response_model=KeyCreated, status_code=201)
async def create_key(body: KeyCreate, user: SessionUser, db: DB) -> KeyCreated:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    expires = now() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    key = await accounts.add_api_key(db, user.id, body.name, secret, secret[:10], expires)
    await db.commit()
    return KeyCreated(**KeyPublic.model_validate(key).model_dump(), key=secret)


@router.delete("/keys/{key_id}", status_code=204)
async def delete_key(key_id: uuid.UUID, user: SessionUser, db: DB) -> Response:
    if not await accounts.delete_api_key(db, user.id, key_id):
        raise not_found("key")
    await db.commit()
    return Response(status_code=204)


def user_cache_identity(user_id: uuid.UUID) -> str:
    """A user's prefix-cache identity: the same in the chat app and with their personal key."""
    return f"user:{user_id}"


def key_check(db: Database) -> Callable[[str], Awaitable[Caller | None]]:
    """For the /v1/* guard: the user whose live personal key a Bearer token is, if any."""

    async def check(token: str) -> Caller | None:
        if not token.startswith(KEY_PREFIX):
            return None
        async with db.session() as session:
            user = await accounts.user_for_api_key(session, token)
            await session.commit()
        if user is None:
            return None
        return Caller(user_cache_identity(user.id), admin=user.role == "admin")

    return check
