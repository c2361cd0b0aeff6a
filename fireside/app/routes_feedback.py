"""Ratings of answers, and read-only share links to a branch."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from fireside.api.errors import bad_request
from fireside.app.conversations import rate_answer
from fireside.app.deps import DB, CurrentUser, OwnedConversation, OwnedMessage
from fireside.app.errors import not_found
from fireside.app.schemas import MessagePublic, Page, Strict
from fireside.store import conversations, shares

router = APIRouter(tags=["feedback"])


class FeedbackCreate(Strict):
    rating: Literal["up", "down"]
    reason: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=10_000)


class FeedbackPublic(BaseModel):
    message_id: str
    rating: Literal["up", "down"]
    reason: str | None
    comment: str | None


@router.post("/messages/{message_id}/feedback", response_model=FeedbackPublic)
async def rate(
    body: FeedbackCreate, owned: OwnedMessage, user: CurrentUser, db: DB
) -> FeedbackPublic:
    message, _ = owned
    await rate_answer(db, user.id, message, body.rating, body.reason, body.comment)
    return FeedbackPublic(message_id=str(message.id), **body.model_dump())


class ShareCreated(BaseModel):
    id: uuid.UUID  # what GET /api/shares lists and DELETE /api/shares/{id} revokes
    token: str  # shown this once: the server keeps only its hash
    url: str  # where anyone with the link reads it


class SharePublic(BaseModel):
    """A share link of the caller's, without its token (the server cannot give it back)."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    conversation_id: uuid.UUID
    title: str
    created_at: datetime


class SharedConversation(BaseModel):
    title: str
    messages: list[MessagePublic]
    created_at: datetime


@router.post("/conversations/{conversation_id}/share", response_model=ShareCreated, status_code=201)
async def share(conversation: OwnedConversation, user: CurrentUser, db: DB) -> ShareCreated:
    """A snapshot of the branch on show: later messages are not shared."""
    branch = await conversations.branch(db, conversation.current_leaf_id)
    if not branch:
        raise bad_request("there is nothing to share yet", "conversation_id")
    token = secrets.token_urlsafe(24)
    snapshot = [MessagePublic.model_validate(m).model_dump(mode="json") for m in branch]
    made = await shares.add_share(db, token, conversation.id, user.id, conversation.title, snapshot)
    await db.commit()
    return ShareCreated(id=made.id, token=token, url=f"/api/share/{token}")


@router.get("/shares", response_model=Page[SharePublic])
async def list_shares(user: CurrentUser, db: DB) -> Page[SharePublic]:
    """The caller's share links, newest first."""
    found = await shares.user_shares(db, user.id)
    return Page(data=[SharePublic.model_validate(s) for s in found])


@router.delete("/shares/{share_id}", status_code=204)
async def revoke_share_by_id(share_id: uuid.UUID, user: CurrentUser, db: DB) -> Response:
    if not await shares.revoke(db, user.id, id=share_id):
        raise not_found("share")
    await db.commit()
    return Response(status_code=204)


@router.get("/share/{token}", response_model=SharedConversation)
async def read_share(token: str, db: DB) -> SharedConversation:
    """Open to anyone holding the link (the token is 192 random bits)."""
    found = await shares.share_by_token(db, token)
    if found is None:
        raise not_found("share")
    return SharedConversation(
        title=found.title,
        messages=[MessagePublic.model_validate(m) for m in found.messages],
        created_at=found.created_at,
    )


@router.delete("/share/{token}", status_code=204)
async def revoke_share(token: str, user: CurrentUser, db: DB) -> Response:
    if not await shares.revoke(db, user.id, token=token):
        raise not_found("share")
    await db.commit()
    return Response(status_code=204)
