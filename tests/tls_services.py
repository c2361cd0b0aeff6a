"""A PostgreSQL and a Redis of the test's own with TLS turned on by a CA the test makes: a
temporary `initdb` cluster (ssl=on, plain TCP refused by pg_hba) and a `redis-server` with
only a TLS port. Skipped, saying what is missing, where the binaries are not installed."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tls_utils import CertAuthority, make_ca


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsServices:
    ca: CertAuthority
    directory: Path
    pg_port: int
    redis_port: int

    def pg_url(
        self, mode: str = "verify-full", host: str = "localhost", db: str = "postgres"
    ) -> str:
        query = f"sslmode={mode}&sslrootcert={self.ca.cert}"
        return f"postgresql+asyncpg://postgres@{host}:{self.pg_port}/{db}?{query}"

    def redis_url(self, ca: Path | None = None) -> str:
        return f"rediss://localhost:{self.redis_port}/0?ssl_ca_certs={ca or self.ca.cert}"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


def _postgres_user() -> str | None:
    """initdb refuses to run as root: as root, the cluster runs as `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user for initdb")
    return "postgres"


@contextlib.contextmanager
def postgres_with_tls(ca: CertAuthority, directory: Path) -> Iterator[int]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    user = _postgres_user()
    # The server's certificate names localhost only: a client that checks the name
    # (verify-full) must connect as localhost, not 127.0.0.1.
    cert = ca.issue(directory, "postgres-server", hosts=("localhost",))
    data = directory / "pgdata"
    if user is not None:
        uid = pwd.getpwnam(user).pw_uid
        for path in (directory, cert.cert, cert.key):
            os.chown(path, uid, -1)
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        user=user, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1,::1'\n"
            f"unix_socket_directories = '{directory}'\nssl = on\n"
            f"ssl_cert_file = '{cert.cert}'\nssl_key_file = '{cert.key}'\n"
            "fsync = off\nsynchronous_commit = off\nmax_connections = 60\n"
        )
    # TCP only with TLS: a plain connection is refused before any authentication.
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"
        "hostnossl all all 127.0.0.1/32 reject\nhostnossl all all ::1/128 reject\n"
    )
    log = directory / "postgres.log"
    started = subprocess.run(
        [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"],
        user=user, capture_output=True, text=True,
    )  # fmt: skip
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL with TLS did not start: {started.stderr}\n{_tail(log)}")
    try:
        yield port
    finally:
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], user=user, capture_output=True
        )


@contextlib.contextmanager
def redis_with_tls(ca: CertAuthority, directory: Path) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    cert = ca.issue(directory, "redis-server", hosts=("localhost",))
    port = free_port()
    log = directory / "redis.log"
    command = [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1 -::1"]
    command += ["--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key)]
    command += ["--tls-ca-cert-file", str(ca.cert), "--tls-auth-clients", "no"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    command += ["--logfile", str(log)]
    proc = subprocess.Popen(command)
    try:
        import redis

        deadline = time.monotonic() + 30
        while True:
            try:
                client = redis.Redis(
                    host="localhost", port=port, ssl=True, ssl_ca_certs=str(ca.cert)
                )
                if client.ping():
                    client.close()
                    break
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                if "TLS" in _tail(log) and "not" in _tail(log):
                    pytest.skip(f"this redis-server has no TLS: {_tail(log)}")
                pytest.fail(f"redis-server with TLS did not start:\n{_tail(log)}")
            time.sleep(0.1)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@contextlib.contextmanager
def tls_services() -> Iterator[TlsServices]:
    # Not pytest's tmp_path: its directories are private to root, and the cluster runs as
    # the postgres user.
    directory = Path(tempfile.mkdtemp(prefix="fireside-tls-"))
    directory.chmod(0o755)
    try:
        ca = make_ca(directory / "ca")
        (directory / "ca").chmod(0o755)
        with postgres_with_tls(ca, directory) as pg, redis_with_tls(ca, directory) as rd:
            yield TlsServices(ca, directory, pg, rd)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
