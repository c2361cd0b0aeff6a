"""/api/admin: improving the model from feedback, and the model versions it makes.

    GET  /api/admin/improve                   consented feedback there is to train on
    POST /api/admin/jobs                      start a job {"method", "lora_rank", "steps"}
    GET  /api/admin/jobs, /jobs/{id}          jobs, newest first; one job
    POST /api/admin/jobs/{id}/cancel          stop it (its process is killed)
    GET  /api/admin/jobs/{id}/events          progress as server-sent events (Last-Event-ID)
    GET  /api/admin/versions                  every version, which one is served
    POST /api/admin/versions/{id}/serve       serve it now; serving an older one rolls back

Every route takes AdminUser (403 otherwise); an unknown job or version is 404.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fireside.api.errors import bad_request
from fireside.api.state import AppStateDep
from fireside.app.deps import DB, AdminUser, ChatStateDep
from fireside.app.errors import conflict, not_found
from fireside.app.improve import JobConflict, JobFailed, JobOptions, JobPublic, job_key
from fireside.app.improve_data import NotEnoughFeedback, feedback_counts
from fireside.app.schemas import Strict
from fireside.app.state import ChatState
from fireside.app.streams import QUIET_S, SSE_HEADERS, check_event_id, sse
from fireside.app.versions import VersionError
from fireside.store import improve as store
from fireside.store.events import Event
from fireside.store.models import ModelVersion

router = APIRouter(prefix="/admin", tags=["improve"])

JOB_EVENTS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: status (the job), progress (step, total, loss, "
        "reward_margin, eta_s), done (the job, at its end)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class ImproveSummary(BaseModel):
    dpo_pairs: int  # preference pairs from regenerated, rated answers
    sft_conversations: int  # branches ending in an answer rated up
    questions: int
    running_job: uuid.UUID | None
    served_version: str | None


class JobCreate(Strict):
    method: Literal["dpo", "sft"] = "dpo"
    lora_rank: int | None = Field(default=16, ge=1, le=256)  # null: train every weight
    steps: int = Field(default=100, ge=1, le=100_000)


class JobList(BaseModel):
    data: list[JobPublic]


class VersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    kind: str
    path: str
    method: str | None
    data: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    served: bool = False


class VersionList(BaseModel):
    data: list[VersionPublic]
    served: str | None  # the served version's name


@router.get("/improve", response_model=ImproveSummary)
async def improve_summary(_: AdminUser, db: DB, api: AppStateDep) -> ImproveSummary:
    counts = await feedback_counts(db)
    active = await store.active_jobs(db)
    return ImproveSummary(
        dpo_pairs=counts.dpo_pairs,
        sft_conversations=counts.sft_conversations,
        questions=counts.questions,
        running_job=active[0].id if active else None,
        served_version=api.served.version if api.served is not None else None,
    )


@router.post("/jobs", response_model=JobPublic, status_code=201)
async def start_job(body: JobCreate, me: AdminUser, chat: ChatStateDep) -> JobPublic:
    try:
        job = await chat.improver.start(JobOptions(body.method, body.lora_rank, body.steps), me.id)
    except JobConflict as e:
        raise conflict(str(e)) from None
    except NotEnoughFeedback as e:
        raise bad_request(str(e), "method") from None
    except JobFailed as e:
        raise conflict(str(e)) from None
    return JobPublic.model_validate(job)


@router.get("/jobs", response_model=JobList)
async def list_jobs(_: AdminUser, db: DB) -> JobList:
    return JobList(data=[JobPublic.model_validate(j) for j in await store.jobs(db)])


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def get_job(job_id: uuid.UUID, _: AdminUser, db: DB) -> JobPublic:
    job = await store.job(db, job_id)
    if job is None:
        raise not_found("job")
    return JobPublic.model_validate(job)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
async def cancel_job(job_id: uuid.UUID, _: AdminUser, db: DB, chat: ChatStateDep) -> JobPublic:
    if await store.job(db, job_id) is None:
        raise not_found("job")
    if not await chat.improver.cancel(job_id):
        raise conflict("the job has already ended")
    # A new transaction: this session's first read may hold a snapshot from before the cancel
    # the improver's own session committed (SQLite and PostgreSQL alike would show it again).
    await db.rollback()
    job = await store.job(db, job_id)
    assert job is not None
    return JobPublic.model_validate(job)


@router.get("/jobs/{job_id}/events", responses=JOB_EVENTS_DOC)
async def job_events(
    job_id: uuid.UUID,
    _: AdminUser,
    db: DB,
    chat: ChatStateDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    """The job's events after the given id (from its start without one), then live until
    its `done`."""
    if await store.job(db, job_id) is None:
        raise not_found("job")
    given = last_event_id_header if last_event_id_header is not None else last_event_id
    after = check_event_id(chat, given)
    return StreamingResponse(
        sse(follow_job(chat, job_id, after)), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def follow_job(
    chat: ChatState, job_id: uuid.UUID, after: str | None
) -> AsyncIterator[Event | None]:
    """Events after `after`, live, until `done`; ends too when the job has ended and its log
    holds nothing more (a log that did not outlive a restart). None: a quiet spell."""
    key, wait = job_key(job_id), 0.0
    while True:
        events = await chat.events.read(key, after, wait)
        for event in events:
            after = event.id
            yield event
            if event.event == "done":
                return
        if not events:
            async with chat.db.session() as db:
                job = await store.job(db, job_id)
            if job is None or job.status in store.FINISHED:
                for event in await chat.events.read(key, after, 1.0):
                    yield event
                return
            if wait:
                yield None
        wait = QUIET_S


@router.get("/versions", response_model=VersionList)
async def list_versions(_: AdminUser, db: DB, api: AppStateDep) -> VersionList:
    served = api.served.version if api.served is not None else None
    return VersionList(data=[_public(v, served) for v in await store.versions(db)], served=served)


@router.post("/versions/{version_id}/serve", response_model=VersionPublic)
async def serve_version(
    version_id: uuid.UUID, _: AdminUser, db: DB, chat: ChatStateDep
) -> VersionPublic:
    """Serves this version from now on, without a restart (running answers finish on the
    version they began with); serving the previous version is the rollback."""
    version = await store.version(db, version_id)
    if version is None:
        raise not_found("version")
    try:
        await chat.versions.serve(version)
    except VersionError as e:
        raise bad_request(str(e), "version_id") from None
    return _public(version, version.name)


def _public(version: ModelVersion, served: str | None) -> VersionPublic:
    out = VersionPublic.model_validate(version)
    out.served = version.name == served
    return out
