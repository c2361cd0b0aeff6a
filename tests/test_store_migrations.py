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
