"""Ratings of answers, and read-only share links to a branch."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete

from fireside.api.errors import bad_request
from fireside.app.deps import DB, CurrentUser, OwnedConversation, OwnedMessage
from fireside.app.errors import not_found
from fireside.app.schemas import MessagePublic, Strict
from fireside.store import conversations, feedback
from fireside.store.models import Share

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
    if message.role != "assistant":
        raise bad_request("only answers can be rated", "message_id")
    await feedback.rate(db, user.id, message.id, body.rating, body.reason, body.comment)
    await db.commit()
    return FeedbackPublic(message_id=str(message.id), **body.model_dump())


class ShareCreated(BaseModel):
    token: str
    url: str  # where anyone with the link reads it


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
    db.add(
        Share(
            token=token,
            conversation_id=conversation.id,
            user_id=user.id,
            title=conversation.title,
            messages=snapshot,
        )
    )
    await db.commit()
    return ShareCreated(token=token, url=f"/api/share/{token}")


@router.get("/share/{token}", response_model=SharedConversation)
async def read_share(token: str, db: DB) -> SharedConversation:
    """Open to anyone holding the link (the token is 192 random bits)."""
    found = await db.get(Share, token[:64])
    if found is None:
        raise not_found("share")
    return SharedConversation(
        title=found.title,
        messages=[MessagePublic.model_validate(m) for m in found.messages],
        created_at=found.created_at,
    )


@router.delete("/share/{token}", status_code=204)
async def revoke_share(token: str, user: CurrentUser, db: DB) -> Response:
    result = await db.execute(
        delete(Share).where(Share.token == token[:64], Share.user_id == user.id)
    )
    if not getattr(result, "rowcount", 0):
        raise not_found("share")
    await db.commit()
    return Response(status_code=204)
