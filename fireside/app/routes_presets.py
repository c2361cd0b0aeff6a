"""/api/presets: saved system prompts (the caller's own and shared ones)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from fireside.app import presets
from fireside.app.deps import DB, CurrentUser, DeletablePreset
from fireside.app.schemas import Page, PresetCreate, PresetPublic
from fireside.store import presets as store

router = APIRouter(tags=["presets"])


@router.get("/presets", response_model=Page[PresetPublic])
async def list_presets(
    user: CurrentUser,
    db: DB,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> Page[PresetPublic]:
    return await presets.list_presets(db, user, cursor, limit)


@router.post("/presets", response_model=PresetPublic, status_code=201)
async def create_preset(body: PresetCreate, user: CurrentUser, db: DB) -> PresetPublic:
    """A non-administrator asking for `shared` is refused (403)."""
    return await presets.create_preset(db, user, body)


@router.delete("/presets/{preset_id}", status_code=204)
async def delete_preset(preset: DeletablePreset, db: DB) -> Response:
    await store.delete_preset(db, preset)
    await db.commit()
    return Response(status_code=204)
