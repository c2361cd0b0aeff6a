"""/api/projects: named groups of conversations with shared instructions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from fireside.app import projects
from fireside.app.cursors import decode_cursor, encode_cursor
from fireside.app.deps import DB, ChatStateDep, CurrentUser, OwnedProject
from fireside.app.schemas import Page, ProjectCreate, ProjectPublic, ProjectUpdate
from fireside.store import projects as store

router = APIRouter(tags=["projects"])


@router.get("/projects", response_model=Page[ProjectPublic])
async def list_projects(
    user: CurrentUser,
    db: DB,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> Page[ProjectPublic]:
    before = decode_cursor(cursor) if cursor else None
    rows = await store.list_projects(db, user.id, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[ProjectPublic.model_validate(p) for p in rows],
        next_cursor=encode_cursor(rows[-1].updated_at, rows[-1].id) if more else None,
    )


@router.post("/projects", response_model=ProjectPublic, status_code=201)
async def create_project(body: ProjectCreate, user: CurrentUser, db: DB) -> ProjectPublic:
    project = await store.add_project(db, user.id, **body.model_dump())
    await db.commit()
    return ProjectPublic.model_validate(project)


@router.get("/projects/{project_id}", response_model=ProjectPublic)
async def get_project(project: OwnedProject) -> ProjectPublic:
    return ProjectPublic.model_validate(project)


@router.patch("/projects/{project_id}", response_model=ProjectPublic)
async def update_project(body: ProjectUpdate, project: OwnedProject, db: DB) -> ProjectPublic:
    await projects.update_project(db, project, body.model_dump(exclude_none=True))
    return ProjectPublic.model_validate(project)


@router.delete("/projects/{project_id}", status_code=204)
async def delete_project(
    project: OwnedProject, db: DB, chat: ChatStateDep, delete_conversations: bool = False
) -> Response:
    """Deletes the project; its conversations with it (`delete_conversations=true`) or, by
    default, moved out of it."""
    await projects.delete_project(db, chat, project, delete_conversations)
    return Response(status_code=204)
