"""/api/memory: the facts Fireside remembers for the caller (see fireside.app.memory)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from fireside.app import memory
from fireside.app.deps import DB, CurrentUser, OwnedMemoryFact
from fireside.app.schemas import Page, Strict
from fireside.store import memory as store

router = APIRouter(tags=["memory"])


class MemoryFactCreate(Strict):
    content: str = Field(min_length=1, max_length=memory.MAX_FACT)


class MemoryFactUpdate(Strict):
    content: str = Field(min_length=1, max_length=memory.MAX_FACT)


class MemoryFactPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    content: str
    created_at: datetime
    updated_at: datetime


@router.get("/memory", response_model=Page[MemoryFactPublic])
async def list_memory(user: CurrentUser, db: DB) -> Page[MemoryFactPublic]:
    """All the caller's facts, oldest first (at most MAX_FACTS, so one page)."""
    facts = await store.list_facts(db, user.id)
    return Page(data=[MemoryFactPublic.model_validate(f) for f in facts])


@router.post("/memory", response_model=MemoryFactPublic, status_code=201)
async def add_memory(body: MemoryFactCreate, user: CurrentUser, db: DB) -> MemoryFactPublic:
    fact = await memory.add_fact(db, user, body.content)
    return MemoryFactPublic.model_validate(fact)


@router.patch("/memory/{fact_id}", response_model=MemoryFactPublic)
async def edit_memory(body: MemoryFactUpdate, fact: OwnedMemoryFact, db: DB) -> MemoryFactPublic:
    await memory.edit_fact(db, fact, body.content)
    return MemoryFactPublic.model_validate(fact)


@router.delete("/memory/{fact_id}", status_code=204)
async def delete_memory(fact: OwnedMemoryFact, db: DB) -> Response:
    await memory.delete_fact(db, fact)
    return Response(status_code=204)
