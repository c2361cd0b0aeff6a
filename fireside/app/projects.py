"""Projects: a named group of conversations whose instructions every one of them inherits.

The instructions are read when an answer is written (not copied into each conversation), so
editing them changes the next answer of every chat in the project, as in ChatGPT.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app import files
from fireside.app.errors import not_found
from fireside.app.state import ChatState
from fireside.store import files as file_store
from fireside.store import projects as store
from fireside.store.models import Conversation, Project, now


async def check_project(db: AsyncSession, user_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """A conversation may only be put into a project of its owner's: anything else is 404."""
    if await store.owned_project(db, user_id, project_id) is None:
        raise not_found("project")


async def update_project(db: AsyncSession, project: Project, changes: dict[str, object]) -> None:
    for name, value in changes.items():
        setattr(project, name, value)
    project.updated_at = now()
    await db.commit()


async def delete_project(
    db: AsyncSession, chat: ChatState, project: Project, delete_conversations: bool
) -> None:
    """Deletes the project, and its conversations with it or moves them out of it, in one
    transaction. An answer still being written in a chat to delete is stopped first."""
    doomed: list[uuid.UUID] | None = None
    if delete_conversations:
        doomed = await store.conversation_ids(db, project)
        for conversation_id in doomed:
            await chat.generations.stop(db, conversation_id)
    # The project's own files go with it, and the deleted chats' files with them; a chat
    # moved out keeps the files uploaded into it.
    digests = await files.delete_with(db, doomed or [], project.id)
    await file_store.leave_project(db, project.id)
    await store.delete_project(db, project, doomed)
    await db.commit()
    await files.forget(chat, digests)


async def system_prompt(db: AsyncSession, conversation: Conversation) -> str | None:
    """The project's instructions first, then the conversation's own system prompt."""
    parts: list[str] = []
    if conversation.project_id is not None:
        instructions = await store.project_instructions(db, conversation.project_id)
        if instructions:
            parts.append(instructions)
    if conversation.system_prompt:
        parts.append(conversation.system_prompt)
    return "\n\n".join(parts) or None
