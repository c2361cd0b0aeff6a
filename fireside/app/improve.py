"""The "improve the model" job: consented feedback -> a new model version, evaluated against
the one in service.

An admin starts it (POST /api/admin/jobs or `fireside admin improve`). The server exports the
feedback into a run directory under the data dir (improve_data.py), then runs the work as
separate processes at low priority (`nice`), each resumable on the same run directory:

    [fireside merge]          only when the served version is a LoRA: its weights, merged
    fireside train dpo|sft    the training; metrics.jsonl is read for live progress
    python -m fireside.eval.compare   the evaluation against the served version

Progress and status go to the event log under `job:{id}` (the chat's log: SSE followers
resume by Last-Event-ID) and into the job's row. A server that stops kills its job's process
and leaves the job `training`/`evaluating`; at the next start (or in another live process)
the job is claimed and its phase run again, which resumes from the last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app.improve_data import (
    DATA_FILE,
    HELD_OUT_CONVERSATIONS,
    HELD_OUT_PAIRS,
    TRAIN_FILE,
    Method,
    export_run_data,
)
from fireside.app.versions import weights_dir
from fireside.settings import Settings
from fireside.store import improve as store
from fireside.store.db import Database
from fireside.store.models import ImproveJob, ModelVersion
from fireside.train.metrics import METRICS_FILE

log = logging.getLogger(__name__)


class JobEvents(Protocol):
    """Where a job's events go: an event log (the server's coalescing one, or a plain one)."""

    async def append(self, stream: str, event: str, data: dict[str, Any]) -> str: ...


POLL_S = 0.5  # how often a running phase's metrics (and a cancel) are looked at
KILL_WAIT_S = 10.0  # after SIGTERM, how long a phase's process has before SIGKILL
LOG_TAIL = 2000  # characters of a failed process's log kept as the job's error


def job_key(job_id: uuid.UUID) -> str:
    return f"job:{job_id}"


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    status: str
    options: dict[str, Any]
    progress: dict[str, Any]
    comparison: dict[str, Any] | None
    error: str | None
    version_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


def job_public(job: ImproveJob) -> dict[str, Any]:
    return JobPublic.model_validate(job).model_dump(mode="json")


@dataclass
class JobOptions:
    method: Method
    lora_rank: int | None  # None: every weight trains (a full version)
    steps: int


class JobFailed(Exception):
    """The job cannot go on (its message is the job's error)."""


class JobCancelled(Exception):
    """An admin cancelled the job while it ran."""


class JobConflict(Exception):
    """Another job is still running: one at a time."""


def train_lr(opts: JobOptions) -> float:
    """`fireside train`'s defaults are for full fine-tuning; a low-rank update needs a larger
    step to move in as few steps (the usual LoRA rates are ~10x full fine-tuning's)."""
    base = 1e-5 if opts.method == "dpo" else 1e-4
    return base * 10 if opts.lora_rank is not None else base


def progress_of(records: list[dict[str, Any]], total: int) -> dict[str, Any] | None:
    """Step, loss, DPO's reward margin and the time left, from a run's metrics.jsonl."""
    steps = [r for r in records if "loss" in r and "step" in r]
    if not steps:
        return None
    last = steps[-1]
    recent = [float(r["step_s"]) for r in steps[-10:] if "step_s" in r]
    out: dict[str, Any] = {"step": int(last["step"]), "total": total, "loss": last["loss"]}
    if "reward_margin" in last:
        out["reward_margin"] = last["reward_margin"]
    if recent:
        out["eta_s"] = round(sum(recent) / len(recent) * max(total - out["step"], 0), 1)
    return out


class Improver:
    """Starts, supervises, cancels and resumes improve jobs of this process. `alive` says
    which server processes live (the broker's), so a dead one's jobs are taken over."""

    def __init__(
        self,
        db: Database,
        events: JobEvents,  # the chat's own log: the page follows a job like an answer
        settings: Settings,
        worker: str,
        alive: Callable[[Iterable[str]], Awaitable[set[str]]],
    ) -> None:
        self.db, self.events, self.settings, self.worker = db, events, settings, worker
        self.alive = alive
        self.tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.processes: dict[uuid.UUID, asyncio.subprocess.Process] = {}
        self._lock = asyncio.Lock()

    def run_dir(self, job_id: uuid.UUID) -> Path:
        return self.settings.resolved_data_dir() / "improve" / str(job_id)

    # --- starting, cancelling, resuming ---

    async def start(self, opts: JobOptions, created_by: uuid.UUID | None) -> ImproveJob:
        """Exports the data and starts the job; raises NotEnoughFeedback, or JobConflict
        (a job already runs)."""
        async with self._lock, self.db.session() as db:
            if await store.active_jobs(db):
                raise JobConflict("an improve job is already running; wait for it or cancel it")
            parent = await current_version(db)
            if parent is None:
                raise JobFailed("no model version is registered yet: the model is still loading")
            job_id = uuid.uuid4()
            data = await export_run_data(db, self.run_dir(job_id), opts.method)
            job = await store.add_job(
                db,
                id=job_id,
                status="queued",
                options={
                    "method": opts.method,
                    "lora_rank": opts.lora_rank,
                    "steps": opts.steps,
                    "parent_version": str(parent.id),
                },
                progress={"step": 0, "total": opts.steps, "data": data},
                created_by=created_by,
                worker=self.worker,
            )
            await db.commit()
            await db.refresh(job)
        await self.events.append(job_key(job.id), "status", job_public(job))
        self._spawn(job.id)
        return job

    def _spawn(self, job_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._supervise(job_id), name=f"improve-{job_id}")
        self.tasks[job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job_id, None))

    async def resume_orphans(self) -> None:
        """Jobs left active by a process that is gone: claimed (by one process) and run on."""
        async with self.db.session() as db:
            active = await store.active_jobs(db)
            living = await self.alive([j.worker for j in active if j.worker])
            for job in active:
                if job.id in self.tasks or job.worker in living or _cli_alive(job.worker):
                    continue
                if await store.claim_job(db, job.id, job.worker, self.worker):
                    await db.commit()
                    log.info("resuming improve job %s (%s)", job.id, job.status)
                    self._spawn(job.id)

    async def cancel(self, job_id: uuid.UUID) -> bool:
        """False when the job had already ended."""
        async with self.db.session() as db:
            cancelled = await store.cancel_job(db, job_id)
            await db.commit()
        if cancelled:
            self._kill(job_id)
        return cancelled

    async def wait(self, job_id: uuid.UUID) -> None:
        task = self.tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    async def shutdown(self) -> None:
        """Stops this process's jobs' processes; the jobs stay active, to resume at a start."""
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- the job ---

    async def _supervise(self, job_id: uuid.UUID) -> None:
        try:
            await self._run(job_id)
        except JobCancelled:
            await self._finish(job_id, "cancelled")
        except Exception as e:  # the job fails, never the server
            log.exception("improve job %s failed", job_id)
            await self._finish(job_id, "failed", error=str(e) or type(e).__name__)

    async def _run(self, job_id: uuid.UUID) -> None:
        job, parent = await self._load(job_id)
        opts = JobOptions(job.options["method"], job.options["lora_rank"], job.options["steps"])
        run = self.run_dir(job_id)
        # A LoRA version's weights are its base plus the adapter: merged, they are the start.
        start = run / "start" if parent.kind == "lora" else weights_dir(parent)
        if job.status in ("queued", "training"):
            await self._set(job_id, status="training")
            if parent.kind == "lora" and not (start / "config.json").is_file():
                merge = ["-m", "fireside", "merge", "--model", str(weights_dir(parent)),
                         "--adapter", parent.path, "--output", str(start)]  # fmt: skip
                await self._process(job_id, merge, run / "merge.log")
            await self._process(
                job_id,
                self._train_command(opts, start, run),
                run / "train.log",
                metrics=run / "train" / METRICS_FILE,
                total=opts.steps,
            )
            await self._set(job_id, status="evaluating")
        if not (run / "comparison.json").is_file():  # written whole, so a resume may skip it
            await self._process(
                job_id, self._eval_command(opts, parent, start, run), run / "eval.log"
            )
        comparison = json.loads((run / "comparison.json").read_text())
        data = json.loads((run / DATA_FILE).read_text())
        async with self.db.session() as db:
            fields: dict[str, Any] = dict(
                name=await store.next_version_name(db),
                parent_id=parent.id,
                kind="lora" if opts.lora_rank is not None else "full",
                path=str((run / "train").resolve()),
                method=opts.method,
                data={**data, "base_model": str(start.resolve()), "job_id": str(job_id)},
                metrics={**comparison.get("candidate", {}), "compared_with": parent.name},
            )
            version = await store.add_version(db, **fields)
            await store.update_job(db, job_id, comparison=comparison, version_id=version.id)
            await db.commit()
        await self._finish(job_id, "done")

    def _train_command(self, opts: JobOptions, start: Path, run: Path) -> list[str]:
        cmd = [
            "-m", "fireside", "train", opts.method,
            "--model", str(start),
            "--data", str(run / TRAIN_FILE),
            "--output", str(run / "train"),
            "--steps", str(opts.steps),
            "--lr", str(train_lr(opts)),
            "--save-every", str(max(1, min(50, opts.steps // 4))),
            "--device", self.settings.device,
            "--no-progress",
        ]  # fmt: skip
        if opts.lora_rank is not None:
            cmd += ["--lora-rank", str(opts.lora_rank)]
        return cmd

    def _eval_command(
        self, opts: JobOptions, parent: ModelVersion, start: Path, run: Path
    ) -> list[str]:
        from fireside.tools.knowledge import default_index_path

        cmd = [
            "-m", "fireside.eval.compare",
            "--served", str(weights_dir(parent)),
            "--candidate", str(start if opts.lora_rank is not None else run / "train"),
            "--pairs", str(run / HELD_OUT_PAIRS),
            "--conversations", str(run / HELD_OUT_CONVERSATIONS),
            "--knowledge-db", str(default_index_path()),
            "--device", self.settings.device,
            "--output", str(run / "comparison.json"),
        ]  # fmt: skip
        if parent.kind == "lora":
            cmd += ["--served-adapter", parent.path]
        if opts.lora_rank is not None:
            cmd += ["--candidate-adapter", str(run / "train")]
        return cmd

    async def _process(
        self,
        job_id: uuid.UUID,
        args: list[str],
        log_path: Path,
        metrics: Path | None = None,
        total: int = 0,
    ) -> None:
        """One phase as a child process at low priority; its output goes to `log_path`. While
        it runs: progress from `metrics`, and a cancel (from any process) kills it."""
        nice = shutil.which("nice")
        cmd = ([nice, "-n", "10"] if nice else []) + [sys.executable, *args]
        with open(log_path, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True
            )
        self.processes[job_id] = proc
        last_step, ticks = -1, 0
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), POLL_S)
                if metrics is not None:
                    last_step = await self._progress(job_id, metrics, total, last_step)
                if proc.returncode is not None:
                    break
                ticks += 1
                if ticks % 4 == 0 and await self._status(job_id) == "cancelled":
                    self._kill(job_id)
        except asyncio.CancelledError:
            # The server stops: the process goes with it (never two trainings on one run
            # directory); the job stays active and its phase runs again at the next start.
            self._kill(job_id)
            try:
                await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            raise
        finally:
            self.processes.pop(job_id, None)
        if proc.returncode != 0:
            if await self._status(job_id) == "cancelled":
                raise JobCancelled()
            tail = log_path.read_text(errors="replace")[-LOG_TAIL:]
            raise JobFailed(f"{' '.join(args[:4])} exited with {proc.returncode}:\n{tail}")

    async def _progress(self, job_id: uuid.UUID, metrics: Path, total: int, last: int) -> int:
        from fireside.train.metrics import read_metrics

        try:
            progress = progress_of(read_metrics(metrics.parent), total)
        except (OSError, ValueError):  # a line being written: read it next time
            return last
        if progress is None or progress["step"] == last:
            return last
        await self.events.append(job_key(job_id), "progress", progress)
        async with self.db.session() as db:
            job = await store.job(db, job_id)
            data = job.progress.get("data") if job is not None else None
            await store.update_job(db, job_id, progress={**progress, "data": data})
            await db.commit()
        return int(progress["step"])

    def _kill(self, job_id: uuid.UUID) -> None:
        proc = self.processes.get(job_id)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: merge/train's children too

    # --- the row and the log ---

    async def _load(self, job_id: uuid.UUID) -> tuple[ImproveJob, ModelVersion]:
        async with self.db.session() as db:
            job = await store.job(db, job_id)
            if job is None:
                raise JobFailed("the job's row is gone")
            parent = await store.version(db, uuid.UUID(job.options["parent_version"]))
            if parent is None:
                raise JobFailed("the version it started from is gone")
            return job, parent

    async def _status(self, job_id: uuid.UUID) -> str | None:
        async with self.db.session() as db:
            job = await store.job(db, job_id)
            return job.status if job is not None else None

    async def _set(self, job_id: uuid.UUID, **fields: Any) -> None:
        """Changes the row (unless the job was cancelled meanwhile) and logs it as `status`."""
        async with self.db.session() as db:
            job = await store.job(db, job_id)
            if job is None:
                raise JobFailed("the job's row is gone")
            if job.status == "cancelled":
                raise JobCancelled()
            await store.update_job(db, job_id, **fields)
            await db.commit()
            await db.refresh(job)
            public = job_public(job)
        await self.events.append(job_key(job_id), "status", public)

    async def _finish(self, job_id: uuid.UUID, status: str, error: str | None = None) -> None:
        async with self.db.session() as db:
            await store.update_job(db, job_id, status=status, error=error)
            await db.commit()
            job = await store.job(db, job_id)
            if job is None:
                return
            await db.refresh(job)
            public = job_public(job)
        await self.events.append(job_key(job_id), "done", public)


async def current_version(db: AsyncSession) -> ModelVersion | None:
    """The version new jobs start from: the one chosen to be served, else base."""
    chosen = await store.served_version_id(db)
    found = await store.version(db, chosen) if chosen is not None else None
    return found or await store.version_named(db, "base")


def _cli_alive(worker: str | None) -> bool:
    """Whether `fireside admin improve` (worker "cli-<pid>", on this machine) still runs."""
    if worker is None or not worker.startswith("cli-"):
        return False
    try:
        os.kill(int(worker[4:]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
