"""A chat server of a test's own on a fresh database (no account yet; on PostgreSQL a new
database, so Redis-kept counts, keyed by the database, start from zero too)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from tests.app_utils import Backend, chat_settings, postgres_database, run_chat_server


@contextmanager
def fresh_backend(like: Backend, data_dir: Path) -> Iterator[Backend]:
    fresh = postgres_database() if like.name == "postgres" else nullcontext(None)
    with fresh as pg_url:
        yield Backend(like.name, data_dir, pg_url, like.redis_url)


@contextmanager
def fresh_server(like: Backend, data_dir: Path, model_dir: Path, **settings: Any) -> Iterator[str]:
    with (
        fresh_backend(like, data_dir) as backend,
        run_chat_server(model_dir, chat_settings(backend, **settings)) as url,
    ):
        yield url
