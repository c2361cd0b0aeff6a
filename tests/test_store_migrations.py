"""The migrations form one line: two branches that each add a revision after the same parent
would leave Alembic with two heads, and start-up would refuse to migrate."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

import fireside.store

MIGRATIONS = Path(fireside.store.__file__).parent / "migrations"


def test_the_migrations_have_one_head_and_one_base() -> None:
    script = ScriptDirectory(str(MIGRATIONS))
    assert len(script.get_heads()) == 1, script.get_heads()
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    assert len({r.revision for r in revisions}) == len(revisions)


# Each process waits for the go file, then migrates, logging Alembic's steps.
_MIGRATE = """
import asyncio, logging, os, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
from fireside.store.db import Database
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
async def main():
    db = Database(sys.argv[1])
    await db.migrate()
    await db.close()
asyncio.run(main())
"""


def test_gateways_starting_together_migrate_once(tmp_path: Path) -> None:
    """Three processes migrate one fresh PostgreSQL database at once (as three `fireside
    serve` starting together would): all succeed, each revision runs once, the schema is at
    the head."""
    import asyncio
    import subprocess
    import sys

    from sqlalchemy import text

    from fireside.store.db import Database
    from tests.app_utils import postgres_database

    go = tmp_path / "go"
    with postgres_database() as url:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _MIGRATE, url, str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            for _ in range(3)
        ]
        go.touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        ran = [line for out in outputs for line in out.splitlines() if "Running upgrade" in line]
        script = ScriptDirectory(str(MIGRATIONS))
        revisions = list(script.walk_revisions())
        assert len(ran) == len(revisions), ran  # each once, by whichever process held the lock

        async def version() -> list[str]:
            db = Database(url)
            async with db.session() as s:
                rows = (await s.execute(text("SELECT version_num FROM alembic_version"))).all()
            await db.close()
            return [r[0] for r in rows]

        assert asyncio.run(version()) == [script.get_current_head()]
