"""A real Fireside server on a free port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
import uvicorn
from fastapi import FastAPI

from fireside.api.app import create_app
from fireside.api.served import ServedModel
from fireside.engine import Engine, EngineConfig
from fireside.model import Tokenizer, Transformer, save_pretrained
from fireside.server import build_app, load_served
from fireside.settings import Settings
from tests.conftest import tiny_config
from tests.engine_utils import StepGate


def make_model_dir(tokenizer: Tokenizer, path: Path, context: int = 1024) -> Path:
    """A tiny random Llama with room for tool schemas in its prompt (the tokenizer is tiny too)."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size, max_position_embeddings=context))
    model.init_weights(std=0.5)
    save_pretrained(model, tokenizer, path)
    return path


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    model: str
    api_key: str | None

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@contextmanager
def run_server(
    model_dir: Path,
    name: str = "tiny",
    api_key: str | None = None,
    engine_config: EngineConfig | None = None,
) -> Iterator[RunningServer]:
    settings = Settings(model=str(model_dir), served_model_name=name, api_key=api_key)
    with run_app(build_app(settings, engine_config)) as url:
        yield RunningServer(url, name, api_key)


@dataclass
class GatedServer(RunningServer):
    engine: Engine
    gate: StepGate  # holds the engine's model between forwards while the test needs it


@contextmanager
def run_gated_server(
    model_dir: Path, engine_config: EngineConfig | None = None
) -> Iterator[GatedServer]:
    """A server whose engine steps only when the test lets it (see StepGate)."""
    loaded: list[ServedModel] = []

    async def load() -> ServedModel:
        served = await load_served(model_dir, "tiny", "cpu", engine_config)
        loaded.append(served)
        return served

    with run_app(create_app("tiny", load)) as url:
        engine = loaded[0].engine
        assert isinstance(engine, Engine)
        gate = StepGate(engine.model)
        try:
            yield GatedServer(url, "tiny", None, engine, gate)
        finally:
            gate.remove()  # nothing held: the server can shut down


@contextmanager
def run_app(app: FastAPI, wait_ready: bool = True) -> Iterator[str]:
    """Serves `app` on a free port in a thread; yields its base URL (http://127.0.0.1:PORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; no race with other workers
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        while wait_ready:
            if httpx.get(f"{url}/health").status_code == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the test server's model did not load")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
