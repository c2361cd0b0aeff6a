"""PostgreSQL and Redis over TLS, set through their URLs as people paste them
(`?sslmode=verify-full&sslrootcert=…`, `rediss://…?ssl_ca_certs=…`), against servers with
TLS turned on by a CA the test makes: the connections are encrypted (pg_stat_ssl; a plain
client is refused), certificates and names are checked, and the chat app runs over both."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fireside.errors import FiresideError
from fireside.store.db import Database
from fireside.store.pg_ssl import asyncpg_ssl
from tests.app_utils import Backend, Client, chat_settings, run_chat_server
from tests.tls_services import TlsServices, tls_services
from tests.tls_utils import make_ca


@pytest.fixture(scope="session")
def tls() -> Iterator[TlsServices]:
    with tls_services() as services:
        yield services


async def _ssl_of_session(url: str) -> tuple[bool, str]:
    db = Database(url)
    try:
        async with db.session() as s:
            row = (
                await s.execute(
                    text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                )
            ).one()
            return bool(row[0]), str(row[1])
    finally:
        await db.close()


def test_postgres_verify_full_is_encrypted(tls: TlsServices) -> None:
    encrypted, version = asyncio.run(_ssl_of_session(tls.pg_url("verify-full")))
    assert encrypted and version.startswith("TLS")


def test_postgres_refuses_what_libpq_would(tls: TlsServices, tmp_path: Path) -> None:
    # A plain connection: the server's pg_hba takes TLS only.
    with pytest.raises(Exception, match="no encryption"):
        asyncio.run(_ssl_of_session(tls.pg_url("disable")))
    # The certificate names localhost: verify-full checks the name, verify-ca does not.
    with pytest.raises(ssl.SSLCertVerificationError, match=r"IP address mismatch|match"):
        asyncio.run(_ssl_of_session(tls.pg_url("verify-full", host="127.0.0.1")))
    assert asyncio.run(_ssl_of_session(tls.pg_url("verify-ca", host="127.0.0.1")))[0]
    # Another CA's root: the server's certificate is not trusted.
    other = make_ca(tmp_path / "other")
    url = tls.pg_url("verify-full").replace(str(tls.ca.cert), str(other.cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_ssl_of_session(url))
    # "require" without a root certificate encrypts without verifying (libpq's meaning).
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{tls.pg_port}/postgres?sslmode=require"
    assert asyncio.run(_ssl_of_session(url))[0]


def test_asyncpg_spelling_with_a_root_certificate(tls: TlsServices) -> None:
    """`ssl=` (asyncpg's spelling, which a URL mapped from `postgresql://…?sslmode=` carries)
    with libpq's `sslrootcert` beside it: verified against that CA."""
    url = tls.pg_url("verify-full").replace("sslmode=", "ssl=")
    assert asyncio.run(_ssl_of_session(url))[0]
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_ssl_of_session(url.replace("localhost", "127.0.0.1")))


def test_sslmode_mapping_errors_are_one_line() -> None:
    with pytest.raises(FiresideError, match="sslmode='verify_full' is not one of"):
        asyncpg_ssl(make_url("postgresql+asyncpg://h/db?sslmode=verify_full"))
    with pytest.raises(FiresideError, match=r"sslrootcert='/nope\.pem': no such file"):
        asyncpg_ssl(make_url("postgresql+asyncpg://h/db?sslmode=verify-full&sslrootcert=/nope.pem"))
    url, args = asyncpg_ssl(make_url("postgresql+asyncpg://u:p@h:5/db?sslmode=prefer&x=1"))
    assert args == {"ssl": "prefer"} and url.query == {"x": "1"} and url.password == "p"
    assert asyncpg_ssl(make_url("postgresql+asyncpg://h/db?sslmode=disable"))[1] == {"ssl": False}
    assert asyncpg_ssl(make_url("postgresql+asyncpg://h/db"))[1] == {}


def test_redis_over_tls_through_its_url(tls: TlsServices, tmp_path: Path) -> None:
    client = redis.Redis.from_url(tls.redis_url())
    assert client.ping()
    # No plain port at all: every client is on TLS.
    assert client.config_get("port") == {"port": "0"}
    client.close()
    # A plain client on the TLS port gets no answer it can read.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="localhost", port=tls.redis_port, socket_timeout=3).ping()
    other = make_ca(tmp_path / "other")
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(tls.redis_url(ca=other.cert)).ping()
    url = f"rediss://127.0.0.1:{tls.redis_port}/0?ssl_ca_certs={tls.ca.cert}"
    with pytest.raises(redis.ConnectionError, match=r"mismatch|match"):
        redis.Redis.from_url(url).ping()  # the name is checked too


@pytest.mark.usefixtures("one_thread")
def test_chat_app_over_tls_postgres_and_redis(
    tls: TlsServices, api_model_dir: Path, tmp_path: Path
) -> None:
    name = f"fireside_tls_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        db = Database(tls.pg_url())
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await db.close()

    asyncio.run(create())
    backend = Backend("postgres", tmp_path, tls.pg_url(db=name), tls.redis_url())
    with run_chat_server(api_model_dir, chat_settings(backend)) as url:
        client = Client(url)
        client.signup("Tess")
        conv = client.new_conversation()
        events = client.send(conv["id"], "over TLS")
        assert events[-1].event == "done"
        stored = client.http.get(f"/conversations/{conv['id']}").json()["messages"][-1]
        assert stored["content"] == events[-1].data["message"]["content"]
        client.close()

        async def connections() -> list[bool]:
            db = Database(tls.pg_url())
            try:
                async with db.session() as s:
                    rows = await s.execute(
                        text(
                            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a "
                            "USING (pid) WHERE a.datname = :name"
                        ),
                        {"name": name},
                    )
                    return [bool(r[0]) for r in rows]
            finally:
                await db.close()

        seen = asyncio.run(connections())
        assert seen and all(seen)  # the app's pooled connections, every one encrypted
    # The event log and stop signals went through the TLS Redis (it has the streams).
    client_r = redis.Redis.from_url(tls.redis_url())
    assert any(key.startswith(b"fireside") for key in client_r.scan_iter(count=1000))
    client_r.close()
