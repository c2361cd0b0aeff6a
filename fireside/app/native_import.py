"""Import of this server's own export (`GET /api/export`): a user's conversations, each with
its whole message tree, back into an account (this server or another).

Ids are new (an export imported twice makes two copies, and ids of another account are
never reused); parents, the branch on show and every message's fields carry over. An answer
that was still being written when exported comes back `interrupted`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict, deque
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import bad_request
from fireside.api.schemas import ToolCall
from fireside.app.chatgpt_import import MAX_CONVERSATIONS
from fireside.app.schemas import MAX_CONTENT
from fireside.store import conversations as store

MAX_MESSAGES = 100_000  # in one conversation


class _Loose(BaseModel):
    # Fields a later version adds are ignored, so older servers read newer exports.
    model_config = ConfigDict(extra="ignore")


class ExportedMessage(_Loose):
    id: uuid.UUID
    parent_id: uuid.UUID | None = None
    role: Literal["user", "assistant", "tool", "system"]
    content: str = Field(max_length=MAX_CONTENT)
    status: Literal["complete", "streaming", "stopped", "interrupted", "error"] = "complete"
    model: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, max_length=MAX_CONTENT)
    # Checked as OpenAI's tool calls (a 400 naming the message otherwise): they are rendered
    # back into prompts when the conversation goes on.
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    created_at: datetime


class ExportedConversation(_Loose):
    title: str = Field(default="", max_length=200)
    model: str | None = Field(default=None, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    pinned: bool = False
    archived: bool = False
    current_leaf_id: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime
    messages: list[ExportedMessage] = Field(max_length=MAX_MESSAGES)


class FiresideExport(_Loose):
    """What `GET /api/export` returns; the `user` part is not imported (the caller is the user)."""

    conversations: list[ExportedConversation] = Field(max_length=MAX_CONVERSATIONS)


def parents_first(index: int, messages: list[ExportedMessage]) -> list[ExportedMessage]:
    """The messages ordered so that each comes after its parent; a 400 for a parent that is
    not in the conversation, a repeated id, or a cycle."""
    where = f"conversations[{index}].messages"
    by_id = {m.id: m for m in messages}
    if len(by_id) != len(messages):
        raise bad_request(f"{where}: two messages have the same id", where)
    children: dict[uuid.UUID | None, list[ExportedMessage]] = defaultdict(list)
    for m in messages:
        if m.parent_id is not None and m.parent_id not in by_id:
            raise bad_request(
                f"{where}: the parent {m.parent_id} of message {m.id} is not in this conversation",
                where,
            )
        children[m.parent_id].append(m)
    ordered: list[ExportedMessage] = []
    queue = deque(children[None])
    while queue:
        m = queue.popleft()
        ordered.append(m)
        queue.extend(children[m.id])
    if len(ordered) != len(messages):
        raise bad_request(f"{where}: the messages' parents go round in a cycle", where)
    return ordered


Plan = tuple[ExportedConversation, list[ExportedMessage]]


def plan_export(export: FiresideExport) -> list[Plan]:
    """Every conversation checked, its messages parents first, before anything is written."""
    plans = [(c, parents_first(i, c.messages)) for i, c in enumerate(export.conversations)]
    for i, (c, _) in enumerate(plans):
        if c.current_leaf_id is not None and c.current_leaf_id not in {m.id for m in c.messages}:
            where = f"conversations[{i}].current_leaf_id"
            raise bad_request(f"{where} is not a message of this conversation", where)
    return plans


async def write_plans(db: AsyncSession, user_id: uuid.UUID, plans: list[Plan]) -> list[uuid.UUID]:
    """Adds these conversations with their trees (the caller commits). Messages are marked
    imported, and written together at the next flush."""
    made = []
    for c, messages in plans:
        conversation = await store.add_conversation(
            db,
            user_id,
            title=c.title,
            model=c.model,
            system_prompt=c.system_prompt,
            temperature=c.temperature,
            max_tokens=c.max_tokens,
            pinned=c.pinned,
            archived=c.archived,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        new_ids: dict[uuid.UUID, uuid.UUID] = {}
        for m in messages:
            message = await store.add_message(
                db,
                conversation.id,
                new_ids[m.parent_id] if m.parent_id is not None else None,
                m.role,
                m.content,
                flush=False,
                status="interrupted" if m.status == "streaming" else m.status,
                model=m.model,
                error=m.error,
                tool_calls=[t.model_dump(exclude_none=True) for t in m.tool_calls]
                if m.tool_calls is not None
                else None,
                imported=True,
                created_at=m.created_at,
                updated_at=m.created_at,
            )
            new_ids[m.id] = message.id
        leaf = new_ids[c.current_leaf_id] if c.current_leaf_id is not None else None
        if leaf is None and messages:
            leaf = new_ids[max(messages, key=lambda m: m.created_at).id]
        await db.flush()  # the messages, before the conversation names its leaf
        conversation.current_leaf_id = leaf
        made.append(conversation.id)
    await db.flush()
    return made
