"""What the conversation routes do, once for both front doors: /api (REST) and /graphql call
these, so a rule (a cursor, a branch page, what a rename may change, what a delete removes,
which message may be rated) is written here and nowhere else. Ownership is decided before:
every function takes a conversation or message the caller owns (fireside.app.deps)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import bad_request
from fireside.app import files
from fireside.app.cursors import decode_cursor, encode_cursor
from fireside.app.errors import not_found
from fireside.app.generation import Generation
from fireside.app.memory import instructions_prompt
from fireside.app.projects import check_project
from fireside.app.state import ChatState
from fireside.store import conversations as store
from fireside.store import feedback
from fireside.store.models import Conversation, Feedback, Message, User

UPDATABLE = ("title", "model", "system_prompt", "temperature", "max_tokens", "pinned",
             "archived", "current_leaf_id", "project_id")  # fmt: skip
NOT_NULL = ("title", "pinned", "archived", "current_leaf_id")


async def create_conversation(db: AsyncSession, user: User, fields: dict[str, Any]) -> Conversation:
    if fields.get("project_id") is not None:
        await check_project(db, user.id, fields["project_id"])
    fields["system_prompt"] = instructions_prompt(user, fields.get("system_prompt"))
    conversation = await store.add_conversation(db, user.id, **fields)
    await db.commit()
    return conversation


async def conversation_page(
    db: AsyncSession,
    user_id: uuid.UUID,
    cursor: str | None,
    limit: int,
    archived: bool = False,
    project_id: uuid.UUID | None = None,
) -> tuple[list[Conversation], str | None]:
    """One page of the user's conversations, newest first, and the cursor of the next."""
    before = decode_cursor(cursor) if cursor else None
    if project_id is not None:
        await check_project(db, user_id, project_id)
    rows = await store.list_conversations(db, user_id, limit + 1, before, archived, project_id)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].updated_at, rows[-1].id) if more else None


@dataclass
class BranchPage:
    messages: list[Message]  # root first
    siblings: dict[uuid.UUID | None, list[uuid.UUID]]  # each message's parent's children
    before: uuid.UUID | None  # where the earlier part continues (None: at the root)


async def branch_page(
    db: AsyncSession, conversation: Conversation, limit: int, before: uuid.UUID | None = None
) -> BranchPage:
    """The branch on show: its last `limit` messages, or the `limit` messages above `before`
    (a long chat opens with one page, not the whole tree)."""
    leaf = conversation.current_leaf_id
    if before is not None:
        anchor = await store.message_in(db, conversation.id, before)
        if anchor is None:
            raise not_found("message")
        leaf = anchor.parent_id
    messages = await store.branch(db, leaf, limit)
    earlier = messages[0].id if messages and messages[0].parent_id is not None else None
    siblings = await store.sibling_ids(db, conversation.id, messages)
    return BranchPage(messages, siblings, earlier)


async def update_conversation(
    db: AsyncSession, conversation: Conversation, changes: dict[str, Any]
) -> Conversation:
    """Applies the given fields (a rename is {"title": ...}) and commits."""
    for name in NOT_NULL:
        if name in changes and changes[name] is None:
            raise bad_request(f"{name} cannot be null", name)
    leaf = changes.get("current_leaf_id")
    if leaf is not None and await store.message_in(db, conversation.id, leaf) is None:
        raise not_found("message")
    if changes.get("project_id") is not None:
        await check_project(db, conversation.user_id, changes["project_id"])
    for name, value in changes.items():
        if name not in UPDATABLE:
            raise bad_request(f"{name} cannot be changed", name)
        setattr(conversation, name, value)
    await db.commit()
    return conversation


async def delete_conversation(
    db: AsyncSession, chat: ChatState, conversation: Conversation
) -> None:
    # An answer still being written is stopped first, so no task writes into a deleted tree.
    await chat.generations.stop(db, conversation.id)
    digests = await files.delete_with(db, [conversation.id])  # the files uploaded for it
    await store.delete_conversation(db, conversation)
    await db.commit()
    await files.forget(chat, digests)


async def send_message(
    db: AsyncSession,
    chat: ChatState,
    conversation: Conversation,
    content: str,
    parent_id: uuid.UUID | None = None,
    file_ids: list[uuid.UUID] | None = None,
) -> Generation:
    """Stores the question under `parent_id` (default: the branch on show) and starts its
    answer; the caller follows the conversation's events from `stream_after`."""
    parent_id = parent_id or conversation.current_leaf_id
    parent = None
    if parent_id is not None:
        parent = await store.message_in(db, conversation.id, parent_id)
        if parent is None:
            raise not_found("message")
    return await chat.generations.start(db, conversation, parent, content, file_ids)


async def rate_answer(
    db: AsyncSession,
    user_id: uuid.UUID,
    message: Message,
    rating: str,
    reason: str | None,
    comment: str | None,
) -> Feedback:
    if message.role != "assistant":
        raise bad_request("only answers can be rated", "message_id")
    found = await feedback.rate(db, user_id, message.id, rating, reason, comment)
    await db.commit()
    return found


async def feedback_page(
    db: AsyncSession, user_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[Feedback], str | None]:
    """One page of the user's ratings, newest first, and the cursor of the next."""
    before = decode_cursor(cursor) if cursor else None
    rows = await feedback.user_feedback(db, user_id, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].message_id) if more else None
