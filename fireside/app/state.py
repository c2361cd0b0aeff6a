"""What the chat application holds while it runs: database, event log, broker, and this
process's generation tasks. One per app, created in its lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fireside.app.blobs import Blobs
from fireside.app.crypto import SecretBox
from fireside.settings import Settings
from fireside.store.broker import Broker
from fireside.store.coalescing import CoalescingEventLog
from fireside.store.db import Database

if TYPE_CHECKING:
    from fireside.app.generation import Generations
    from fireside.app.improve import Improver
    from fireside.app.limits import AuthLimits
    from fireside.app.oidc import OIDCLogin
    from fireside.app.runs import Runs
    from fireside.app.versions import Versions


@dataclass
class ChatState:
    settings: Settings
    db: Database
    events: CoalescingEventLog  # over the configured EventLog
    broker: Broker
    worker: str  # this process's id, stamped on the generations it runs
    secrets: SecretBox
    blobs: Blobs  # uploaded files' bytes (DATA/files)
    generations: Generations = field(init=False)
    limits: AuthLimits = field(init=False)
    runs: Runs = field(init=False)
    improver: Improver = field(init=False)  # improve jobs (export, train, evaluate)
    versions: Versions = field(init=False)  # which model version this process serves
    oidc: OIDCLogin | None = None  # set when OpenID Connect login is configured
