"""Model versions and improve jobs (SQL); which version is served is an app_settings row."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.store.admin import set_setting, setting
from fireside.store.models import ImproveJob, ModelVersion, now

SERVED_VERSION = "served_version"  # app_settings key: the id of the version to serve
ACTIVE = ("queued", "training", "evaluating")
FINISHED = ("done", "failed", "cancelled")


async def versions(db: AsyncSession) -> list[ModelVersion]:
    return list(await db.scalars(select(ModelVersion).order_by(ModelVersion.created_at)))


async def version(db: AsyncSession, version_id: uuid.UUID) -> ModelVersion | None:
    found: ModelVersion | None = await db.get(ModelVersion, version_id)
    return found


async def version_named(db: AsyncSession, name: str) -> ModelVersion | None:
    found: ModelVersion | None = await db.scalar(
        select(ModelVersion).where(ModelVersion.name == name)
    )
    return found


async def next_version_name(db: AsyncSession) -> str:
    """v1, v2, ...: one more than the versions trained so far (base is not counted)."""
    count = await db.scalar(select(func.count()).select_from(ModelVersion))
    return f"v{int(count or 0)}"  # the base version is the first row


async def add_version(db: AsyncSession, **fields: Any) -> ModelVersion:
    row = ModelVersion(**fields)
    db.add(row)
    await db.flush()
    return row


async def served_version_id(db: AsyncSession) -> uuid.UUID | None:
    value = await setting(db, SERVED_VERSION)
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def set_served_version(db: AsyncSession, version_id: uuid.UUID) -> None:
    await set_setting(db, SERVED_VERSION, str(version_id))


async def jobs(db: AsyncSession, limit: int = 100) -> list[ImproveJob]:
    query = select(ImproveJob).order_by(ImproveJob.created_at.desc()).limit(limit)
    return list(await db.scalars(query))


async def job(db: AsyncSession, job_id: uuid.UUID) -> ImproveJob | None:
    found: ImproveJob | None = await db.get(ImproveJob, job_id)
    return found


async def active_jobs(db: AsyncSession) -> list[ImproveJob]:
    return list(await db.scalars(select(ImproveJob).where(ImproveJob.status.in_(ACTIVE))))


async def add_job(db: AsyncSession, **fields: Any) -> ImproveJob:
    row = ImproveJob(**fields)
    db.add(row)
    await db.flush()
    return row


async def update_job(db: AsyncSession, job_id: uuid.UUID, **fields: Any) -> None:
    await db.execute(
        update(ImproveJob).where(ImproveJob.id == job_id).values(updated_at=now(), **fields)
    )


async def claim_job(db: AsyncSession, job_id: uuid.UUID, old: str | None, worker: str) -> bool:
    """Takes over a job whose process died; False when another process took it first."""
    result = await db.execute(
        update(ImproveJob)
        .where(
            ImproveJob.id == job_id,
            ImproveJob.worker.is_(None) if old is None else ImproveJob.worker == old,
        )
        .values(worker=worker, updated_at=now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def cancel_job(db: AsyncSession, job_id: uuid.UUID) -> bool:
    """Marks an active job cancelled (its supervisor sees it and stops the process)."""
    result = await db.execute(
        update(ImproveJob)
        .where(ImproveJob.id == job_id, ImproveJob.status.in_(ACTIVE))
        .values(status="cancelled", updated_at=now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
