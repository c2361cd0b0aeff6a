"""Search over one's own messages, the model list, and one's whole data as JSON."""

from __future__ import annotations

import asyncio
import base64
import html
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import bad_request
from fireside.api.state import AppState, AppStateDep
from fireside.app.blobs import Blobs
from fireside.app.chatgpt_import import MAX_CONVERSATIONS, GptConversation
from fireside.app.connected import enabled_connections
from fireside.app.deps import DB, ChatStateDep, CurrentUser
from fireside.app.imports import run_import
from fireside.app.native_import import FiresideExport
from fireside.app.routes_memory import MemoryFactPublic
from fireside.app.schemas import (
    ConversationPublic,
    FilePublic,
    MessagePublic,
    Page,
    ProjectPublic,
    UserPublic,
)
from fireside.app.sources import remote_models
from fireside.app.state import ChatState
from fireside.store import search
from fireside.store.export import user_data, user_files
from fireside.store.memory import list_facts
from fireside.store.presets import own_presets
from fireside.store.projects import list_projects

router = APIRouter(tags=["data"])


class SearchHit(BaseModel):
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    title: str
    role: str
    snippet: str  # HTML: the text escaped, the matched words in <mark>
    created_at: datetime


def _snippet(raw: str) -> str:
    return html.escape(raw).replace(search.START, "<mark>").replace(search.STOP, "</mark>")


@router.get("/search", response_model=Page[SearchHit])
async def search_messages(
    user: CurrentUser,
    db: DB,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    cursor: Annotated[str | None, Query(max_length=12)] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> Page[SearchHit]:
    if not q.split() or any(ch in q for ch in (search.START, search.STOP, "\x00")):
        raise bad_request("search for at least one word", "q")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
        raise bad_request("the cursor is not one this server gave", "cursor")
    offset = int(cursor or 0)
    hits = await search.search_messages(db, user.id, q, limit + 1, offset)
    more = len(hits) > limit
    return Page(
        data=[
            SearchHit(
                conversation_id=h.conversation_id,
                message_id=h.message_id,
                title=h.title,
                role=h.role,
                snippet=_snippet(h.snippet),
                created_at=h.created_at,
            )
            for h in hits[:limit]
        ],
        next_cursor=str(offset + limit) if more else None,
    )


class ModelPublic(BaseModel):
    id: str  # what a conversation's `model` takes
    source: str  # "local" (this server's model) or the connection's name
    ready: bool


class ConnectionProblem(BaseModel):
    connection: str
    error: str


class ModelList(Page[ModelPublic]):
    errors: list[ConnectionProblem] = Field(default_factory=list)  # why a connection lists none


@router.get("/models", response_model=ModelList)
async def list_models(
    user: CurrentUser, state: AppStateDep, chat: ChatStateDep, db: DB
) -> ModelList:
    """The served model, then each enabled connection's models (settings' and the admin's);
    a connection that cannot list them has an entry in `errors` saying why."""
    return await available_models(state, chat, db)


async def available_models(state: AppState, chat: ChatState, db: AsyncSession) -> ModelList:
    """What GET /api/models and GraphQL's `models` answer."""
    models = [ModelPublic(id=state.model_name, source="local", ready=state.served is not None)]
    enabled = await enabled_connections(db, chat)
    listed = await asyncio.gather(*(remote_models(chat, c) for c in enabled))
    errors = []
    for c, (ids, error) in zip(enabled, listed, strict=True):
        models += [ModelPublic(id=f"{c.name}/{i}", source=c.name, ready=True) for i in ids]
        if error is not None:
            errors.append(ConnectionProblem(connection=c.name, error=error))
    return ModelList(data=models, errors=errors)


class ExportedConversation(ConversationPublic):
    messages: list[MessagePublic]  # the whole tree, oldest first


class ExportedPreset(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    system_prompt: str


class ExportedFile(FilePublic):
    sha256: str
    message_ids: list[uuid.UUID]  # the user messages that attached it
    content_base64: str | None  # the bytes as uploaded (None: missing on the server's disk)


class UserExport(BaseModel):
    user: UserPublic
    projects: list[ProjectPublic]  # each conversation names its own by project_id
    memory: list[MemoryFactPublic]
    presets: list[ExportedPreset]  # the caller's own (shared ones of others are not theirs)
    conversations: list[ExportedConversation]
    files: list[ExportedFile]


@router.get("/export", response_model=UserExport)
async def export_my_data(user: CurrentUser, db: DB, chat: ChatStateDep) -> dict[str, Any]:
    """Everything of the caller's: the account, its projects, memory, presets, every
    conversation with its whole tree, and every file with its bytes."""
    pairs = await user_data(db, user.id)
    projects = await list_projects(db, user.id, limit=None, before=None)
    files = [
        ExportedFile(
            **FilePublic.model_validate(f).model_dump(),
            sha256=f.sha256,
            message_ids=message_ids,
            content_base64=await asyncio.to_thread(_base64, chat.blobs, f.sha256),
        )
        for f, message_ids in await user_files(db, user.id)
    ]
    return {
        "files": files,
        "user": UserPublic.model_validate(user),
        "projects": [ProjectPublic.model_validate(p) for p in projects],
        "memory": [MemoryFactPublic.model_validate(f) for f in await list_facts(db, user.id)],
        "presets": [ExportedPreset.model_validate(p) for p in await own_presets(db, user.id)],
        "conversations": [
            ExportedConversation(
                **ConversationPublic.model_validate(c).model_dump(),
                messages=[MessagePublic.model_validate(m) for m in messages],
            )
            for c, messages in pairs
        ],
    }


def _base64(blobs: Blobs, digest: str) -> str | None:
    data = blobs.read(digest)
    return base64.b64encode(data).decode("ascii") if data is not None else None


class ImportResult(BaseModel):
    imported: int
    conversation_ids: list[uuid.UUID]


ChatGptExport = Annotated[list[GptConversation], Field(max_length=MAX_CONVERSATIONS)]


def _export_kind(body: Any) -> str | None:
    if isinstance(body, list):
        return "chatgpt"
    return "fireside" if isinstance(body, dict | FiresideExport) else None


# Told apart by their shape, so an error names what is wrong in the one that was sent.
ImportBody = Annotated[
    Annotated[ChatGptExport, Tag("chatgpt")] | Annotated[FiresideExport, Tag("fireside")],
    Discriminator(
        _export_kind,
        custom_error_type="invalid_export",
        custom_error_message="the body is ChatGPT's conversations.json (a list) or "
        "this server's GET /api/export (an object)",
    ),
]


@router.post("/import", response_model=ImportResult, status_code=201)
async def import_chatgpt(
    body: Annotated[ImportBody, Body()],
    user: CurrentUser,
    chat: ChatStateDep,
    db: DB,
) -> ImportResult:
    """ChatGPT's `conversations.json` (Settings → Data controls → Export, a list), or this
    server's own `GET /api/export` (an object), as the body: at most 20,000 messages (413
    beyond), written a chunk of conversations at a time. Imported messages are never
    training data."""
    ids = await run_import(chat.db, db, user.id, body)
    return ImportResult(imported=len(ids), conversation_ids=ids)
