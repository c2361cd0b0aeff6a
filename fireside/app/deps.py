"""The chat app's dependencies: the database session, the caller, and what the caller owns.

Ownership is decided here, once: `OwnedConversation`, `OwnedMessage`, `OwnedProject`,
`OwnedMemoryFact` and `OwnedFile` are the caller's or a 404, whatever the id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from fireside.api.hosts import origin_allowed
from fireside.app.errors import forbidden, not_found, unauthorized
from fireside.app.state import ChatState
from fireside.store import accounts, conversations, files, memory, presets, projects
from fireside.store.models import Conversation, File, MemoryFact, Message, Preset, Project, User

SESSION_COOKIE = "fireside_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def chat_state(conn: HTTPConnection) -> ChatState:
    state: ChatState = conn.app.state.chat
    return state


ChatStateDep = Annotated[ChatState, Depends(chat_state)]


async def db_session(state: ChatStateDep) -> AsyncIterator[AsyncSession]:
    # Routes commit through their service functions; anything uncommitted rolls back here.
    async with state.db.session() as session:
        yield session


DB = Annotated[AsyncSession, Depends(db_session)]


def session_token(conn: HTTPConnection) -> str | None:
    return conn.cookies.get(SESSION_COOKIE) or None


def check_origin(conn: HTTPConnection, state: ChatState) -> None:
    """A browser sends the cookie with requests another site starts; their Origin gives them
    away. SameSite=Lax already stops most; this stops the rest (and WebSocket hijacking).
    The Origin is held against the configured hosts, never the request's own Host, which a
    DNS-rebinding page sets to match its Origin."""
    origin = conn.headers.get("origin")
    if origin is None:
        return
    settings = state.settings
    if not origin_allowed(
        origin,
        settings.resolved_allowed_hosts(),
        settings.allowed_origins,
        conn.headers.get("host", ""),
    ):
        raise forbidden(f"requests from origin {origin!r} are not accepted")


async def current_user(conn: HTTPConnection, db: DB, state: ChatStateDep) -> User:
    auth = conn.headers.get("authorization")
    if auth is not None:
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise unauthorized("send an API key as 'Authorization: Bearer <key>'")
        user = await accounts.user_for_api_key(db, secret.strip())
        if user is None:
            raise unauthorized("the API key is not valid")
        await db.commit()  # its last_used_at
        return user
    token = session_token(conn)
    if token is None:
        raise unauthorized()
    user = await accounts.user_for_session(db, token)
    if user is None:
        raise unauthorized("the session has ended; log in again")
    method = conn.scope.get("method", "GET")
    if conn.scope["type"] == "websocket" or method not in SAFE_METHODS:
        check_origin(conn, state)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise forbidden("this needs an administrator")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


async def owned_conversation(conversation_id: uuid.UUID, user: CurrentUser, db: DB) -> Conversation:
    found = await conversations.owned_conversation(db, user.id, conversation_id)
    if found is None:
        raise not_found("conversation")
    return found


OwnedConversation = Annotated[Conversation, Depends(owned_conversation)]


async def owned_message(
    message_id: uuid.UUID, user: CurrentUser, db: DB
) -> tuple[Message, Conversation]:
    found = await conversations.owned_message(db, user.id, message_id)
    if found is None:
        raise not_found("message")
    return found


OwnedMessage = Annotated[tuple[Message, Conversation], Depends(owned_message)]


async def deletable_preset(preset_id: uuid.UUID, user: CurrentUser, db: DB) -> Preset:
    """The caller's own preset, or (for an administrator) a shared one. Another user's private
    preset is not found; a shared one the caller may see but not delete is 403."""
    found = await presets.visible_preset(db, user.id, preset_id)
    if found is None:
        raise not_found("preset")
    if found.user_id != user.id and user.role != "admin":
        raise forbidden("only its owner or an administrator may delete a shared preset")
    return found


DeletablePreset = Annotated[Preset, Depends(deletable_preset)]


async def owned_memory_fact(fact_id: uuid.UUID, user: CurrentUser, db: DB) -> MemoryFact:
    found = await memory.owned_fact(db, user.id, fact_id)
    if found is None:
        raise not_found("memory fact")
    return found


OwnedMemoryFact = Annotated[MemoryFact, Depends(owned_memory_fact)]


async def owned_project(project_id: uuid.UUID, user: CurrentUser, db: DB) -> Project:
    found = await projects.owned_project(db, user.id, project_id)
    if found is None:
        raise not_found("project")
    return found


OwnedProject = Annotated[Project, Depends(owned_project)]


async def owned_file(file_id: uuid.UUID, user: CurrentUser, db: DB) -> File:
    found = await files.owned_file(db, user.id, file_id)
    if found is None:
        raise not_found("file")
    return found


OwnedFile = Annotated[File, Depends(owned_file)]
