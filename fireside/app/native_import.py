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
from fireside.app import memory as memory_limits
from fireside.app.chatgpt_import import MAX_CONVERSATIONS
from fireside.app.memory import MAX_FACT, MAX_FACTS
from fireside.app.schemas import MAX_CONTENT, MAX_PRESET_PROMPT
from fireside.store import conversations as store
from fireside.store import memory as memory_store
from fireside.store import presets as preset_store
from fireside.store import projects as project_store

MAX_MESSAGES = 100_000  # in one conversation
MAX_PROJECTS = 10_000  # in one import
MAX_PRESETS = 10_000


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


class ExportedProject(_Loose):
    id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    instructions: str = Field(default="", max_length=MAX_CONTENT)
    created_at: datetime | None = None


class ExportedFact(_Loose):
    content: str = Field(min_length=1, max_length=MAX_FACT)


class ExportedPreset(_Loose):
    name: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(max_length=MAX_PRESET_PROMPT)


class ExportedConversation(_Loose):
    project_id: uuid.UUID | None = None  # one of the export's projects
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
    """What `GET /api/export` returns; the `user` part is not imported (the caller is the user).
    Projects, memory and presets are optional (exports before they existed have none)."""

    projects: list[ExportedProject] = Field(default=[], max_length=MAX_PROJECTS)
    memory: list[ExportedFact] = Field(default=[], max_length=MAX_FACTS)
    presets: list[ExportedPreset] = Field(default=[], max_length=MAX_PRESETS)
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
    projects = {p.id for p in export.projects}
    if len(projects) != len(export.projects):
        raise bad_request("projects: two projects have the same id", "projects")
    for i, (c, _) in enumerate(plans):
        if c.current_leaf_id is not None and c.current_leaf_id not in {m.id for m in c.messages}:
            where = f"conversations[{i}].current_leaf_id"
            raise bad_request(f"{where} is not a message of this conversation", where)
        if c.project_id is not None and c.project_id not in projects:
            where = f"conversations[{i}].project_id"
            raise bad_request(f"{where} is not one of the export's projects", where)
    return plans


async def write_extras(
    db: AsyncSession, user_id: uuid.UUID, export: FiresideExport
) -> dict[uuid.UUID, uuid.UUID]:
    """The export's projects (new ids: the returned map from old to new), memory facts (those
    not already remembered, within the user's limit: a 400 beyond it) and presets (as the
    user's own, never shared: sharing is an admin's act on this server). The caller commits."""
    new_ids = {}
    for p in export.projects:
        project = await project_store.add_project(
            db, user_id, name=p.name, instructions=p.instructions
        )
        new_ids[p.id] = project.id
    known = {f.content for f in await memory_store.list_facts(db, user_id)}
    facts = list(dict.fromkeys(f.content for f in export.memory if f.content not in known))
    if len(known) + len(facts) > memory_limits.MAX_FACTS:
        raise bad_request(
            f"the import would make your memory hold {len(known) + len(facts)} facts, more "
            f"than {memory_limits.MAX_FACTS}: delete some first",
            "memory",
        )
    for content in facts:
        await memory_store.add_fact(db, user_id, content)
    for preset in export.presets:
        await preset_store.add_preset(db, user_id, preset.name, preset.system_prompt, False)
    return new_ids


async def write_plans(
    db: AsyncSession,
    user_id: uuid.UUID,
    plans: list[Plan],
    project_ids: dict[uuid.UUID, uuid.UUID],
) -> list[uuid.UUID]:
    """Adds these conversations with their trees, each in its project's new id (the caller
    commits). Messages are marked imported, and written together at the next flush."""
    made = []
    for c, messages in plans:
        conversation = await store.add_conversation(
            db,
            user_id,
            project_id=project_ids[c.project_id] if c.project_id is not None else None,
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
