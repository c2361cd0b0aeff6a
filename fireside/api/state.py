"""The API's shared state and the dependencies that hand it to routes (of `api` and `app`).

Its own module so that `api/app.py` can import the route modules and they can import this,
without a circle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from fireside.api.errors import not_ready
from fireside.api.metrics import Metrics
from fireside.api.served import ServedModel
from fireside.engine.types import EngineStats


@dataclass(frozen=True)
class Caller:
    """Who sent a /v1 request, as far as its key tells: `identity` salts the prefix cache
    (everyone without a key shares "anonymous"); `admin` may read /metrics."""

    identity: str
    admin: bool = False


ANONYMOUS = Caller("anonymous")
SERVER_KEY = Caller("api-key", admin=True)  # whoever holds --api-key runs the server


def caller(request: HTTPConnection) -> Caller:
    found = request.scope.get("state", {}).get("fireside_caller")
    return found if isinstance(found, Caller) else ANONYMOUS


@dataclass
class AppState:
    model_name: str
    load: Callable[[], Awaitable[ServedModel]]
    served: ServedModel | None = None
    load_error: str | None = None
    metrics: Metrics = field(init=False)
    # More ways to accept a Bearer key on /v1/* besides --api-key (the chat app's personal
    # keys), and whether a key is needed even without --api-key.
    key_checks: list[Callable[[str], Awaitable[Caller | None]]] = field(default_factory=list)
    require_key: bool = False
    # Bigger request bodies than the server's limit, allowed on these paths only (POST
    # /api/files takes a whole file): path -> bytes.
    body_limits: dict[str, int] = field(default_factory=dict)
    # Loads another model directory under the same name and engine settings: how the chat app
    # serves a new full model version without a restart (None: this server cannot).
    load_dir: Callable[[Path], Awaitable[ServedModel]] | None = None

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.model_name, self._stats)

    def _stats(self) -> EngineStats | None:
        return self.served.engine.stats() if self.served is not None else None

    def ready(self) -> ServedModel:
        if self.served is None:
            raise not_ready(
                f"the model failed to load: {self.load_error}"
                if self.load_error
                else "the model is still loading; retry shortly"
            )
        if not self.served.engine.is_healthy():
            # A gateway's engine says why (its workers are out of reach, maybe for a moment).
            reason = getattr(self.served.engine, "unavailable_reason", None)
            raise not_ready(reason or "the inference engine has stopped; restart the server")
        return self.served


def app_state(request: HTTPConnection) -> AppState:
    # HTTPConnection, not Request: WebSocket routes take these dependencies too.
    state: AppState = request.app.state.fireside
    return state


def served_model(request: HTTPConnection) -> ServedModel:
    return app_state(request).ready()


AppStateDep = Annotated[AppState, Depends(app_state)]
ServedDep = Annotated[ServedModel, Depends(served_model)]
