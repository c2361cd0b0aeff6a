"""Projects: named groups of a user's conversations, and the SQL behind them.

Like conversations, every query is scoped to the owner: someone else's project is simply
not found.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.models import Conversation, Message, Project


async def add_project(db: AsyncSession, user_id: uuid.UUID, **fields: Any) -> Project:
    project = Project(user_id=user_id, **fields)
    db.add(project)
    await db.flush()
    return project


async def owned_project(
    db: AsyncSession, user_id: uuid.UUID, project_id: uuid.UUID
) -> Project | None:
    found: Project | None = await db.scalar(
        select(Project).where(Project.id == project_id, Project.user_id == user_id)
    )
    return found


async def project_instructions(db: AsyncSession, project_id: uuid.UUID) -> str | None:
    found: str | None = await db.scalar(
        select(Project.instructions).where(Project.id == project_id)
    )
    return found


async def list_projects(
    db: AsyncSession,
    user_id: uuid.UUID,
    limit: int | None,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[Project]:
    """Newest first, keyset-paginated on (updated_at, id) as conversations are (None: all)."""
    query = select(Project).where(Project.user_id == user_id)
    if before is not None:
        at, id_ = before
        query = query.where(
            or_(Project.updated_at < at, and_(Project.updated_at == at, Project.id < id_))
        )
    query = query.order_by(Project.updated_at.desc(), Project.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(await db.scalars(query))


async def conversation_ids(db: AsyncSession, project: Project) -> list[uuid.UUID]:
    rows = await db.scalars(
        select(Conversation.id).where(
            Conversation.user_id == project.user_id, Conversation.project_id == project.id
        )
    )
    return list(rows)


async def delete_project(
    db: AsyncSession, project: Project, conversations: list[uuid.UUID] | None
) -> None:
    """Deletes the project with `conversations` (their messages, shares and feedback go by
    ON DELETE CASCADE), or with None moves its conversations out of it; in the caller's
    transaction."""
    if conversations:
        await db.execute(delete(Message).where(Message.conversation_id.in_(conversations)))
        await db.execute(
            delete(Conversation)
            .where(Conversation.id.in_(conversations))
            .execution_options(synchronize_session=False)
        )
    await db.execute(
        update(Conversation)
        .where(Conversation.user_id == project.user_id, Conversation.project_id == project.id)
        .values(project_id=None)
        .execution_options(synchronize_session=False)
    )
    await db.delete(project)
