"""A real Fireside server on a free port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
def run_app(
    app: FastAPI, wait_ready: bool = True, options: dict[str, Any] | None = None
) -> Iterator[str]:
    """Serves `app` on a free port in a thread; yields its base URL (http://127.0.0.1:PORT).
    `options`: more uvicorn.Config keywords (those `fireside serve` passes, say)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; no race with other workers
    port = sock.getsockname()[1]
    config = {"log_level": "warning", "timeout_graceful_shutdown": 5, **(options or {})}
    server = uvicorn.Server(uvicorn.Config(app, **config))
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


def request_id_headers() -> Any:
    """A hypothesis strategy for the X-Request-ID a fuzzed request sends (or not): sane ids,
    and text a header can carry that must not reach the logs as it is."""
    from hypothesis import strategies as st

    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
    sane = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=\-]{0,127}", fullmatch=True)
    return st.one_of(st.none(), sane, header_text.map(str.strip))


def assert_request_id(response_headers: Any, sent: str | None) -> None:
    """The response names the request: the id sent when it is sane, else a fresh one."""
    from fireside.logs import sane_request_id

    got = response_headers.get("x-request-id")
    got = got[0] if isinstance(got, list) else got
    if sent is not None and sane_request_id(sent) is not None:
        assert got == sent, (got, sent)
    else:
        assert got is not None and len(got) == 32 and got != sent, (got, sent)
