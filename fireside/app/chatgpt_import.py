"""Import of ChatGPT's data export (`conversations.json`): its message tree maps onto ours.

Each conversation has a `mapping` of nodes (`parent`, `children`, `message`) and a
`current_node`. Nodes without a user or assistant text message (the root, system and tool
turns, code for a tool, hidden context, images) are skipped: their children hang from the
nearest kept ancestor.
"""

from __future__ import annotations

import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store import conversations as store

MAX_CONVERSATIONS = 10_000


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GptAuthor(_Loose):
    role: str


class GptContent(_Loose):
    content_type: str = "text"
    parts: list[Any] | None = None


class GptMessage(_Loose):
    author: GptAuthor
    content: GptContent | None = None
    create_time: float | None = None
    metadata: dict[str, Any] | None = None


class GptNode(_Loose):
    message: GptMessage | None = None
    parent: str | None = None
    children: list[str] = Field(default_factory=list)


class GptConversation(_Loose):
    title: str | None = None
    create_time: float | None = None
    mapping: dict[str, GptNode]
    current_node: str | None = None


def _text(node: GptNode) -> tuple[str, str] | None:
    """(role, text) for a node worth keeping."""
    m = node.message
    if m is None or m.author.role not in ("user", "assistant") or m.content is None:
        return None
    if (m.metadata or {}).get("is_visually_hidden_from_conversation"):
        return None  # custom instructions and other context ChatGPT never shows
    # A multimodal message keeps its text (its images are not in conversations.json).
    if m.content.content_type not in ("text", "multimodal_text") or not m.content.parts:
        return None
    text = "\n".join(p for p in m.content.parts if isinstance(p, str)).strip()
    return (m.author.role, text) if text else None


def _time(ts: float | None, default: datetime) -> datetime:
    if ts is None:
        return default
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return default


async def import_conversations(
    db: AsyncSession, user_id: uuid.UUID, items: list[GptConversation]
) -> list[uuid.UUID]:
    """Adds each conversation with its whole tree, its messages marked imported (the caller
    commits)."""
    made = []
    for item in items:
        started = _time(item.create_time, datetime.now(UTC))
        title = (item.title or "Imported chat")[:200]
        conversation = await store.add_conversation(
            db, user_id, title=title, created_at=started, updated_at=started
        )
        kept: dict[str, uuid.UUID | None] = {}  # node id -> our message id (or its ancestor's)
        roots = [k for k, n in item.mapping.items() if n.parent not in item.mapping]
        queue: deque[tuple[str, uuid.UUID | None]] = deque((r, None) for r in roots)
        while queue:  # parents before children, so parent ids exist when a child is added
            node_id, parent = queue.popleft()
            if node_id in kept:
                continue  # a malformed export with a cycle or a shared child
            node = item.mapping[node_id]
            found = _text(node)
            here = parent
            if found is not None:
                role, text = found
                at = _time(node.message.create_time if node.message else None, started)
                message = await store.add_message(
                    db,
                    conversation.id,
                    parent,
                    role,
                    text,
                    flush=False,  # the tree goes in at the next flush, together
                    imported=True,
                    created_at=at,
                    updated_at=at,
                )
                here = message.id
            kept[node_id] = here
            queue.extend((c, here) for c in node.children if c in item.mapping)
        leaf = kept.get(item.current_node or "") or next(
            (v for v in reversed(kept.values()) if v is not None), None
        )
        await db.flush()  # the messages, before the conversation names its leaf
        conversation.current_leaf_id = leaf
        made.append(conversation.id)
    await db.flush()
    return made
