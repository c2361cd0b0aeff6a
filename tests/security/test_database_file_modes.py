"""Finding 10: the database was world-readable (fireside.db 0644 in a 0755 directory). On a
fresh data directory the real server makes the directory 0700 and the database, its -wal and
-shm files 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.app_utils import Backend, Client, chat_settings, run_chat_server

pytestmark = pytest.mark.usefixtures("one_thread")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_data_directory_and_its_database_are_the_owners_alone(
    tmp_path: Path, api_model_dir: Path
) -> None:
    data_dir = tmp_path / "fresh" / "fireside"  # does not exist yet
    before = os.umask(0o022)  # the usual umask: files 0644 and directories 0755 unless asked
    try:
        settings = chat_settings(Backend("sqlite", data_dir))
        with run_chat_server(api_model_dir, settings) as url:
            client = Client(url)
            client.signup("Kim")  # a write: the -wal and -shm files exist now
            client.new_conversation(title="private")
            client.close()
            files = {
                p.name: mode(p) for p in data_dir.iterdir() if p.name.startswith("fireside.db")
            }
    finally:
        os.umask(before)
    assert mode(data_dir) == 0o700
    assert {"fireside.db", "fireside.db-wal", "fireside.db-shm"} <= set(files), files
    for name in ("fireside.db", "fireside.db-wal", "fireside.db-shm"):
        assert files[name] == 0o600, (name, oct(files[name]))


def test_an_existing_world_readable_database_is_made_private(
    tmp_path: Path, api_model_dir: Path
) -> None:
    """An installation from before the fix: its database file is 0644; start-up fixes it."""
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    settings = chat_settings(Backend("sqlite", data_dir))
    before = os.umask(0o022)
    try:
        (data_dir / "fireside.db").touch(mode=0o644)
        assert mode(data_dir / "fireside.db") == 0o644
        with run_chat_server(api_model_dir, settings) as url:
            Client(url).signup("Lee")
    finally:
        os.umask(before)
    assert mode(data_dir / "fireside.db") == 0o600


def test_an_existing_open_data_directory_is_made_private(tmp_path: Path) -> None:
    from fireside.settings import Settings

    data_dir = tmp_path / "fireside"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an earlier version, or `mkdir` under the usual umask, left it
    assert Settings(data_dir=data_dir).resolved_data_dir() == data_dir
    assert mode(data_dir) == 0o700
