"""Database URLs as people paste them map to the async driver; others are a one-line error."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import text

from fireside.errors import FiresideError
from fireside.store.db import Database
from fireside.store.urls import async_database_url

PG = "postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("postgresql://u:p@db.example:5432/chat", "postgresql+asyncpg://u:p@db.example:5432/chat"),
        ("postgres://u:p@db/chat", "postgresql+asyncpg://u:p@db/chat"),
        ("postgresql+psycopg://u@db/chat", "postgresql+asyncpg://u@db/chat"),
        ("postgresql+psycopg2://u@db/chat", "postgresql+asyncpg://u@db/chat"),
        ("postgresql+asyncpg://u@db/chat", "postgresql+asyncpg://u@db/chat"),
        (
            "postgresql://u@db/chat?sslmode=verify-full",
            "postgresql+asyncpg://u@db/chat?ssl=verify-full",
        ),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_pasted_urls_map_to_the_async_driver(pasted: str, expected: str) -> None:
    assert async_database_url(pasted).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["mysql://u@db/chat", "mongodb://db/chat", "not a url"])
def test_unsupported_urls_are_one_line_errors(url: str) -> None:
    with pytest.raises(FiresideError) as err:
        async_database_url(url)
    assert "\n" not in str(err.value)
    assert "postgresql://" in str(err.value)


def test_error_never_shows_the_password() -> None:
    with pytest.raises(FiresideError) as err:
        async_database_url("mysql://user:hunter2@db/chat")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgresql_url_connects(scheme: str) -> None:
    """The bug: `postgresql://` crashed with `No module named 'psycopg'`."""

    async def select_one() -> int:
        db = Database(f"{scheme}://{PG}?sslmode=disable")
        try:
            async with db.sessions() as session:
                return int((await session.execute(text("select 1"))).scalar_one())
        finally:
            await db.engine.dispose()

    assert asyncio.run(select_one()) == 1


def test_serve_refuses_an_unknown_scheme_in_one_line(tmp_path: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fireside.cli", "serve"],
        capture_output=True,
        text=True,
        env={
            "FIRESIDE_DATABASE_URL": "mysql://u@db/chat",
            "FIRESIDE_DATA_DIR": str(tmp_path),
            "PATH": "/usr/bin:/bin",
            **_pythonpath(),
        },
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "fireside: error: database URL scheme 'mysql' is not supported: use postgresql:// "
        "(or postgres://) or sqlite:///"
    ]


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")}
