"""What the escape corpus aims at on the host, made real for a test: a data directory (its
secret key and an SQLite database with a user), a marker in the host's /tmp, a TCP and an
abstract unix listener that count who connects, a host process, a secret in the environment."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sqlite3
import subprocess
import sysconfig
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fireside.sandbox import Limits

PROJECT = Path(__file__).resolve().parents[2]
# The python tool's own limits, with a shorter clock so the time attacks end sooner.
CORPUS_LIMITS = Limits(timeout_s=6.0, cpu_s=3, memory_bytes=512 << 20, processes=16)


@dataclass
class Host:
    data_dir: Path
    facts: dict[str, str]
    accepted: list[str] = field(default_factory=list)  # connections the listeners took
    sleeper: subprocess.Popen[bytes] | None = None

    def snapshot(self) -> dict[str, object]:
        """The data directory as the server would see it: its files and the users' roles."""
        files = sorted(p.name for p in self.data_dir.iterdir())
        db = sqlite3.connect(self.data_dir / "fireside.db")
        try:
            roles = db.execute("select email, role from users order by email").fetchall()
        finally:
            db.close()
        return {
            "files": files,
            "roles": roles,
            "secret": (self.data_dir / "secret_key").read_text(),
        }

    def planted(self) -> list[str]:
        site = Path(self.facts["SITE_PACKAGES"])
        return [str(p) for p in site.glob("zz_fireside_planted*")] + [
            str(p) for p in Path(sysconfig.get_paths()["stdlib"]).glob("zz_fireside_planted*")
        ]


def survivor_seconds() -> str:
    """A `sleep` argument no other test uses: the daemon's, looked for on the host afterwards."""
    return f"{random.randrange(10**6, 10**7)}.5"


def survivors(seconds: str) -> list[int]:
    """Host processes left by a daemon sleeping `seconds`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline == b"sleep\0" + seconds.encode() + b"\0":
            found.append(int(entry))
    return found


def _listen(sock: socket.socket, accepted: list[str], name: str) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        accepted.append(name)
        conn.close()


@contextmanager
def host(data_dir: Path | None = None, limits: Limits = CORPUS_LIMITS) -> Iterator[Host]:
    """The host side; `data_dir` is a running server's (its secret key and database are
    used as they are), else one is made with a users table like the app's. `limits` are
    those the programs will run under."""
    with tempfile.TemporaryDirectory() as made:
        if data_dir is None:
            data_dir = Path(made)
            (data_dir / "secret_key").write_text(uuid.uuid4().hex + "\n")
            db = sqlite3.connect(data_dir / "fireside.db")
            db.execute("create table users (email text, role text)")
            db.execute("insert into users values ('eve@example.com', 'user')")
            db.commit()
            db.close()
        fd, marker = tempfile.mkstemp(prefix="fireside-host-")
        os.write(fd, b"host secret")
        os.close(fd)
        secret = f"env-secret-{uuid.uuid4().hex}"
        os.environ["FIRESIDE_TEST_ENV_SECRET"] = secret
        tcp = socket.create_server(("127.0.0.1", 0))
        abstract_name = f"fireside-test-{uuid.uuid4().hex}"
        unix = socket.socket(socket.AF_UNIX)
        unix.bind("\0" + abstract_name)
        unix.listen()
        sleeper = subprocess.Popen(["sleep", "300"])
        h = Host(
            data_dir,
            {
                "DATA_DIR": str(data_dir),
                "PROJECT": str(PROJECT),
                "SITE_PACKAGES": sysconfig.get_paths()["purelib"],
                "HOST_TMP_FILE": marker,
                "TCP_PORT": str(tcp.getsockname()[1]),
                "ABSTRACT": abstract_name,
                "HOST_PID": str(sleeper.pid),
                "ENV_SECRET": secret,
                "PROCESSES": str(limits.processes),
                "MEMORY_MIB": str((limits.memory_bytes + limits.disk_bytes) >> 20),
                "DISK_MIB": str(limits.disk_bytes >> 20),
                "SLEEP_PAST": str(limits.timeout_s + 4),
                "SURVIVOR_SECONDS": survivor_seconds(),
            },
            sleeper=sleeper,
        )
        for sock, name in ((tcp, "tcp"), (unix, "abstract")):
            threading.Thread(target=_listen, args=(sock, h.accepted, name), daemon=True).start()
        try:
            yield h
        finally:
            for sock in (tcp, unix):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the listener thread's accept()
                sock.close()
            sleeper.kill()
            sleeper.wait()
            os.unlink(marker)
            os.environ.pop("FIRESIDE_TEST_ENV_SECRET", None)
            for pid in survivors(h.facts["SURVIVOR_SECONDS"]):
                os.kill(pid, 9)
