"""Real `fireside worker` and `fireside serve --workers` processes on loopback, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from tests.api_utils import RunningServer

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Tiny models gain nothing from threads; several processes share two cores.
    env.update(OMP_NUM_THREADS="1", FIRESIDE_JEMALLOC="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str) -> float:
        """A worker's Prometheus sample by name (0 when it has none yet)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def worker_argv(model_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fireside.cli", "worker", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
        "--max-num-seqs", "32", "--kv-cache-gib", "0.05", "--no-pack-weights", *extra,
    ]  # fmt: skip


def start_worker(
    model_dir: Path, log_dir: Path, *extra: str, port: int | None = None, wait: bool = True
) -> Proc:
    port = port or free_port()
    metrics_port = free_port()
    log = log_dir / f"worker-{port}.log"
    argv = worker_argv(model_dir, port, "--metrics-port", str(metrics_port), *extra)
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env())
    proc = Proc(popen, port, log, metrics_port)
    if wait:
        wait_serving(proc)
    return proc


def wait_serving(proc: Proc, credentials: grpc.ChannelCredentials | None = None) -> None:
    """Until the worker's health service says SERVING (its model loaded)."""
    deadline = time.monotonic() + 90
    with (
        grpc.secure_channel(proc.address, credentials)
        if credentials is not None
        else grpc.insecure_channel(proc.address)
    ) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"the worker exited: {proc.log.read_text()[-2000:]}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the worker never served: {proc.log.read_text()[-2000:]}")


def start_gateway(
    workers: Sequence[Proc], log_dir: Path, *extra: str, wait: bool = True, **env: str
) -> Proc:
    port = free_port()
    log = log_dir / f"gateway-{port}.log"
    addresses = ",".join(w.address for w in workers)
    argv = [sys.executable, "-m", "fireside.cli", "serve", "--workers", addresses,
            "--host", "127.0.0.1", "--port", str(port), *extra]  # fmt: skip
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(**env))
    proc = Proc(popen, port, log)
    if wait:
        wait_ready(proc)
    return proc


def wait_ready(proc: Proc) -> None:
    """Until a gateway's /health says 200 (a worker answered with its model)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the gateway exited: {proc.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{proc.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway never became ready: {proc.log.read_text()[-3000:]}")


def stop_all(procs: Sequence[Proc]) -> None:
    """SIGTERM to all at once, then wait for each (their graceful stops overlap)."""
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.terminate()
    for proc in procs:
        proc.stop()


@dataclass
class Gateway:
    server: RunningServer
    workers: list[Proc]


@contextmanager
def run_gateway_with(
    model_dir: Path, log_dir: Path, workers: int = 2, name: str = "tiny"
) -> Iterator[Gateway]:
    """`workers` worker processes and an in-process gateway (no chat app) over them."""
    from fireside.server import build_app
    from fireside.settings import Settings
    from tests.api_utils import RunningServer, run_app

    procs = [
        start_worker(model_dir, log_dir, "--served-model-name", name, wait=False)
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            wait_serving(proc)
        settings = Settings(workers=",".join(p.address for p in procs), app=False)
        with run_app(build_app(settings)) as url:
            yield Gateway(RunningServer(url, name, None), procs)
    finally:
        stop_all(procs)


@contextmanager
def run_gateway(
    model_dir: Path, log_dir: Path, workers: int = 2, name: str = "tiny"
) -> Iterator[RunningServer]:
    """A gateway over `workers` worker processes, as a RunningServer (no chat app)."""
    with run_gateway_with(model_dir, log_dir, workers, name) as gateway:
        yield gateway.server
