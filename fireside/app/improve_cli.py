"""`fireside admin improve | serve-version | models`: the improve job and model versions from
the command line, against the configured database and data directory.

`improve` runs the same job as POST /api/admin/jobs, in this process (training and the
evaluation still run as their own low-priority processes), prints progress to stderr and the
comparison (JSON) to stdout. `serve-version` records the version every server process serves
from its next start; a running server switches at once through
POST /api/admin/versions/{id}/serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from fireside.errors import FiresideError
from fireside.settings import Settings

CLI_WORKER = "cli-"  # a job run by `fireside admin improve` is supervised by "cli-<pid>"


def add_improve_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    improve = commands.add_parser(
        "improve", help="train a new model version from consented feedback, and evaluate it"
    )
    improve.add_argument("--method", choices=["dpo", "sft"], default="dpo")
    rank = improve.add_mutually_exclusive_group()
    rank.add_argument("--lora-rank", type=int, default=16, help="LoRA adapter rank (default 16)")
    rank.add_argument("--full", action="store_true", help="train every weight, not an adapter")
    improve.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    improve.set_defaults(func=_improve)
    serve = commands.add_parser(
        "serve-version", help="the model version servers serve from their next start"
    )
    serve.add_argument("version", help="a version's name (base, v1, ...) or id")
    serve.set_defaults(func=_serve_version)
    models = commands.add_parser("models", help="list the model versions")
    models.set_defaults(func=_models)


def _improve(args: argparse.Namespace) -> int:
    if args.steps < 1 or (not args.full and not 1 <= args.lora_rank <= 256):
        raise FiresideError("--steps must be positive and --lora-rank between 1 and 256")
    lora = None if args.full else args.lora_rank
    comparison = asyncio.run(_run_improve(Settings(), args.method, lora, args.steps))
    print(json.dumps(comparison, indent=2))
    return 0


async def _run_improve(
    settings: Settings, method: Any, lora_rank: int | None, steps: int
) -> dict[str, Any]:
    from fireside.app.improve import Improver, JobConflict, JobFailed, JobOptions, job_key
    from fireside.app.improve_data import NotEnoughFeedback
    from fireside.app.versions import ensure_base
    from fireside.engine.loading import resolve_model_dir
    from fireside.store import improve as store
    from fireside.store.db import Database
    from fireside.store.events import MemoryEventLog

    async def nobody_else(workers: object) -> set[str]:
        return set()

    db = Database(settings.resolved_database_url())
    events = MemoryEventLog()
    try:
        await db.migrate()
        async with db.session() as session:
            await ensure_base(session, resolve_model_dir(settings))
        improver = Improver(db, events, settings, f"{CLI_WORKER}{os.getpid()}", nobody_else)
        try:
            job = await improver.start(JobOptions(method, lora_rank, steps), None)
        except (JobConflict, NotEnoughFeedback, JobFailed) as e:
            raise FiresideError(str(e)) from None
        print(
            f"improve job {job.id}: {settings.resolved_data_dir() / 'improve' / str(job.id)}",
            file=sys.stderr,
        )
        after = None
        while True:
            for event in await events.read(job_key(job.id), after, 5.0):
                after = event.id
                _say(event.event, event.data)
                if event.event == "done":
                    await improver.wait(job.id)
                    if event.data["status"] != "done":
                        raise FiresideError(
                            f"the job {event.data['status']}: {event.data['error']}"
                        )
                    async with db.session() as session:
                        found = await store.job(session, job.id)
                        assert found is not None and found.comparison is not None
                        return found.comparison
    finally:
        await events.close()
        await db.close()


def _say(kind: str, data: dict[str, Any]) -> None:
    if kind == "progress":
        margin = f", reward margin {data['reward_margin']:.4f}" if "reward_margin" in data else ""
        eta = f", {data['eta_s']:.0f} s left" if "eta_s" in data else ""
        print(
            f"step {data['step']}/{data['total']}: loss {data['loss']:.4f}{margin}{eta}",
            file=sys.stderr,
        )
    else:
        print(data["status"], file=sys.stderr)


def _serve_version(args: argparse.Namespace) -> int:
    name = asyncio.run(_choose(Settings(), args.version))
    print(
        f"version {name} is served from the next start of each server; a running server "
        "switches at once with POST /api/admin/versions/{id}/serve"
    )
    return 0


async def _choose(settings: Settings, wanted: str) -> str:
    import uuid

    from fireside.store import improve as store
    from fireside.store.db import Database

    db = Database(settings.resolved_database_url())
    try:
        await db.migrate()
        async with db.session() as session:
            found = await store.version_named(session, wanted)
            if found is None:
                try:
                    found = await store.version(session, uuid.UUID(wanted))
                except ValueError:
                    found = None
            if found is None:
                raise FiresideError(f"no model version {wanted!r}: see `fireside admin models`")
            await store.set_served_version(session, found.id)
            await session.commit()
            return found.name
    finally:
        await db.close()


def _models(args: argparse.Namespace) -> int:
    for line in asyncio.run(_list(Settings())):
        print(line)
    return 0


async def _list(settings: Settings) -> list[str]:
    from fireside.store import improve as store
    from fireside.store.db import Database

    db = Database(settings.resolved_database_url())
    try:
        await db.migrate()
        async with db.session() as session:
            versions = await store.versions(session)
            chosen = await store.served_version_id(session)
    finally:
        await db.close()
    names = {v.id: v.name for v in versions}
    lines = []
    for v in versions:
        served = v.id == chosen or (chosen is None and v.name == "base")
        win = v.metrics.get("win_rate")
        lines.append(
            "\t".join(
                [
                    ("* " if served else "  ") + v.name,
                    v.kind,
                    v.method or "-",
                    f"parent {names.get(v.parent_id, '-') if v.parent_id else '-'}",
                    f"win rate {win:.3f}" if isinstance(win, float) else "win rate -",
                    v.created_at.isoformat(timespec="seconds"),
                    v.path,
                ]
            )
        )
    return lines or ["no model versions yet: a server registers its model as base at its start"]
