"""Model versions in service: which one answers, and switching without a restart.

- A LoRA version is loaded into the running engine beside its base and becomes the engine's
  default adapter: requests naming the served model (or none), the chat app's answers among
  them, run it, and answers name it `tiny@v2`. Its version name (`v2`) addresses it over /v1.
- A full version (or a LoRA version over other weights) gets an engine of its own, which then
  replaces AppState.served; the old engine is shut down once the requests it was running end.
- Rolling back is serving the older version: versions are never deleted by serving another.

Only this process switches at once; the choice is stored (app_settings `served_version`) and
every process serves it from its next start. The first start registers the model it serves as
the version "base".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.served import ServedModel
from fireside.api.state import AppState
from fireside.app.state import ChatState
from fireside.store import improve as store
from fireside.store.models import ModelVersion

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.5
DRAIN_LIMIT_S = 600.0  # an old engine is shut down after this even with requests still open


class VersionError(Exception):
    """A version that cannot be served here (its files are gone, or this server cannot load
    another model); the route answers 400 with the message."""


def weights_dir(version: ModelVersion) -> Path:
    """The model directory a version runs on: its own, or for a LoRA its base's."""
    if version.kind == "lora":
        return Path(version.data.get("base_model", ""))
    return Path(version.path)


def adapter_name(version: ModelVersion) -> str:
    """A LoRA version's adapter is loaded under the version's name (`v2`): /v1 requests can
    name it too. (`tiny@v2`, the label answers carry, is not an adapter name: no `@` there.)"""
    return version.name


async def ensure_base(db: AsyncSession, model_dir: Path) -> ModelVersion:
    """The version "base" (the model of the first start), registered once."""
    base = await store.version_named(db, "base")
    if base is None:
        base = await store.add_version(db, name="base", kind="base", path=str(model_dir.resolve()))
        await db.commit()
    return base


class Versions:
    """Switches what this process serves; one switch at a time."""

    def __init__(self, chat: ChatState, api: AppState) -> None:
        self.chat, self.api = chat, api
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Once the model has loaded: register it as "base", then serve the stored choice."""
        while self.api.served is None:
            if self.api.load_error is not None:
                return
            await asyncio.sleep(0.1)
        async with self.chat.db.session() as db:
            base = await ensure_base(db, Path(self.api.served.root or "."))
            chosen_id = await store.served_version_id(db)
            chosen = await store.version(db, chosen_id) if chosen_id else None
        if chosen is None or chosen.id == base.id:
            self.api.served.version = "base"
            return
        try:
            await self.serve(chosen, remember=False)
        except VersionError as e:
            log.error("cannot serve version %s at start-up (serving base): %s", chosen.name, e)
            self.api.served.version = "base"

    async def served_version(self, db: AsyncSession) -> ModelVersion | None:
        served = self.api.served
        if served is None or served.version is None:
            return None
        return await store.version_named(db, served.version)

    async def serve(self, version: ModelVersion, *, remember: bool = True) -> None:
        async with self._lock:
            served = self.api.ready()
            weights = weights_dir(version)
            if not (weights / "config.json").is_file():
                raise VersionError(
                    f"version {version.name}'s model directory {str(weights)!r} is gone"
                )
            if (
                version.kind == "lora"
                and not (Path(version.path) / "adapter_config.json").is_file()
            ):
                raise VersionError(f"version {version.name}'s adapter {version.path!r} is gone")
            if Path(served.root or "").resolve() != weights.resolve():
                served = await self._swap(weights)
            if version.kind == "lora":
                if served.adapters is None:
                    raise VersionError("this server's engine does not serve LoRA adapters")
                name = adapter_name(version)
                if served.adapters.get(name) is None:
                    await asyncio.to_thread(
                        served.adapters.load, name, Path(version.path), (served.name,)
                    )
                served.default_adapter = name
            else:
                served.default_adapter = None
            served.version = version.name
            if remember:
                async with self.chat.db.session() as db:
                    await store.set_served_version(db, version.id)
                    await db.commit()
            log.info("serving model version %s", version.name)

    async def _swap(self, weights: Path) -> ServedModel:
        if self.api.load_dir is None:
            raise VersionError("this server cannot load another model without a restart")
        new = await self.api.load_dir(weights)
        old, self.api.served = self.api.served, new
        if old is not None:
            task = asyncio.create_task(self._drain(old))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return new

    async def _drain(self, old: ServedModel) -> None:
        """Shut the old engine down once no request runs on it (generations that took it
        before the swap finish there)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_LIMIT_S
        try:
            await asyncio.sleep(DRAIN_POLL_S)  # a request that just took `old` reaches its queue
            while loop.time() < deadline:
                stats = old.engine.stats()
                if stats.running == 0 and stats.waiting == 0:
                    break
                await asyncio.sleep(DRAIN_POLL_S)
        finally:
            if old.close is not None:
                await old.close()

    async def shutdown(self) -> None:
        for task in list(self._draining):
            task.cancel()  # its `finally` still closes the old engine
            with contextlib.suppress(asyncio.CancelledError):
                await task
