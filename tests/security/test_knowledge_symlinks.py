"""Finding 15: `fireside knowledge add DIR` followed symbolic links to files (the process's
own /proc/self/environ included) into the index every user's `search` tool reads. The real
command now indexes regular files only and prints what it skipped."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from fireside.cli import main
from fireside.tools.knowledge import KnowledgeIndex

SECRET = "fireside-test-secret-8c1e"


def indexed_text(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))


def test_links_and_special_files_are_skipped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRESIDE_SHOULD_NOT_LEAK", SECRET)  # in /proc/self/environ now
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.md").write_text(f"# Private\n\nThe vault code is {SECRET}.\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Backups\n\nThe backup job runs nightly at two.\n")
    links = [docs / "environ.txt", docs / "private.md", docs / "elsewhere"]
    links[0].symlink_to("/proc/self/environ")
    links[1].symlink_to(outside / "private.md")
    links[2].symlink_to(outside, target_is_directory=True)  # a linked directory
    fifo = docs / "pipe.txt"
    os.mkfifo(fifo)  # reading it would block the command forever

    db = tmp_path / "knowledge.db"
    assert main(["knowledge", "add", str(docs), "--db", str(db)]) == 0
    out = capsys.readouterr().out

    assert SECRET not in indexed_text(db)
    assert KnowledgeIndex(db).search("vault code") == []
    assert [h.title for h in KnowledgeIndex(db).search("backup job nightly")] == [
        "notes.md: Backups"
    ]
    assert "skipped 4" in out, out
    for path in [*links, fifo]:
        assert str(path) in out, (path, out)
