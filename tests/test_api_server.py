"""Server life: loading and death (503), API keys (401), a full queue (429), and clients that
give up (a cancellation storm leaves the engine idle and serving)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
import torch

from fireside.api.app import create_app
from fireside.api.served import ServedModel
from fireside.api.server import default_model_dir, load_served
from fireside.engine import EngineConfig
from fireside.errors import CheckpointError
from fireside.model import load_pretrained
from tests.api_utils import run_app, run_server

MESSAGES = [{"role": "user", "content": "hello"}]


def test_health_is_503_while_loading_and_after_engine_death(api_model_dir: Path) -> None:
    gate = threading.Event()
    loaded: list[ServedModel] = []

    async def load() -> ServedModel:
        await asyncio.to_thread(gate.wait, 30)
        served = await load_served(api_model_dir, "tiny")
        loaded.append(served)
        return served

    with run_app(create_app("tiny", load), wait_ready=False) as url:
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503
        assert "loading" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 503
        gate.set()
        for _ in range(600):
            if httpx.get(f"{url}/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        r = httpx.post(
            f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}
        )
        assert r.status_code == 200
        # The engine loop only dies of a bug, which no request can trigger: say it died.
        loaded[0].engine.is_healthy = lambda: False  # type: ignore[method-assign]
        assert httpx.get(f"{url}/health").status_code == 503
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"


def test_failed_load_is_reported_by_health(tmp_path: Path) -> None:
    async def load() -> ServedModel:
        raise CheckpointError("config.json is broken")

    with run_app(create_app("tiny", load), wait_ready=False) as url:
        for _ in range(100):
            r = httpx.get(f"{url}/health")
            if "broken" in r.text:
                break
            threading.Event().wait(0.02)
        assert r.status_code == 503 and "config.json is broken" in r.json()["error"]["message"]


def test_api_key(api_model_dir: Path) -> None:
    with run_server(api_model_dir, api_key="sk-right") as s:
        good = openai.OpenAI(base_url=s.base_url, api_key="sk-right", max_retries=0)
        assert good.models.list().data[0].id == "tiny"
        bad = openai.OpenAI(base_url=s.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
        # A missing key is a 401 even when the body is malformed too.
        r = httpx.post(f"{s.base_url}/chat/completions", content=b"{oops")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{s.url}/health").status_code == 200  # probes need no key


def test_full_queue_is_429(api_model_dir: Path) -> None:
    # One running and one waiting request fill this engine; a third is refused, not queued.
    config = EngineConfig(max_num_seqs=1, max_waiting=1)
    with run_server(api_model_dir, engine_config=config) as s:

        async def one(client: openai.AsyncOpenAI) -> str:
            try:
                await client.completions.create(
                    model="tiny", prompt="def", max_tokens=300, extra_body={"ignore_eos": True}
                )
            except openai.RateLimitError:
                return "429"
            return "ok"

        async def main() -> list[str]:
            async with openai.AsyncOpenAI(base_url=s.base_url, api_key="x", max_retries=0) as c:
                return list(await asyncio.gather(*(one(c) for _ in range(4))))

        results = asyncio.run(main())
        assert results.count("429") >= 1 and results.count("ok") >= 2


def metric(url: str, name: str, labels: str = "") -> float:
    """The sum over a metric's label sets (those containing `labels`)."""
    lines = [
        line
        for line in httpx.get(f"{url}/metrics").text.splitlines()
        if line.startswith(name + "{") and labels in line
    ]
    assert lines, f"{name} not exported"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_cancellation_storm_leaves_engine_idle(api_model_dir: Path) -> None:
    with run_server(api_model_dir) as s:

        async def one(impatient: openai.AsyncOpenAI, i: int) -> str:
            kwargs = dict(model="tiny", max_tokens=400, extra_body={"ignore_eos": True})
            try:
                if i % 2:
                    stream = await impatient.chat.completions.create(
                        messages=MESSAGES,
                        stream=True,
                        **kwargs,  # type: ignore[arg-type]
                    )
                    async for _ in stream:
                        pass
                else:
                    await impatient.completions.create(prompt=f"def f{i}():", **kwargs)  # type: ignore[arg-type]
            except openai.APITimeoutError:
                return "timeout"
            return "done"

        async def storm() -> list[str]:
            async with openai.AsyncOpenAI(
                base_url=s.base_url, api_key="x", max_retries=0, timeout=0.5
            ) as impatient:
                return list(await asyncio.gather(*(one(impatient, i) for i in range(200))))

        results = asyncio.run(storm())
        assert results.count("timeout") > 150
        # A normal request is answered within 5 s of the storm.
        patient = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0, timeout=5)
        r = patient.completions.create(model="tiny", prompt="import os", max_tokens=4)
        assert r.usage is not None and r.usage.completion_tokens >= 1
        for _ in range(200):
            if metric(s.url, "fireside:num_requests_running") == 0 and (
                metric(s.url, "fireside:num_requests_waiting") == 0
            ):
                break
            threading.Event().wait(0.05)
        assert metric(s.url, "fireside:num_requests_running") == 0
        assert metric(s.url, "fireside:num_requests_waiting") == 0
        assert metric(s.url, "fireside:kv_cache_usage_perc") == 0.0


def aborts(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return metric(url, "fireside:request_success_total", '"abort"') if '"abort"' in text else 0.0


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_its_request(api_model_dir: Path, stream: bool) -> None:
    with run_server(api_model_dir) as s:
        body = {
            "model": "tiny",
            "prompt": "def",
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": stream,
        }
        if stream:
            with httpx.stream("POST", f"{s.base_url}/completions", json=body) as r:
                next(r.iter_lines())  # generation has begun; now hang up
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{s.base_url}/completions", json=body, timeout=0.3)
        for _ in range(200):
            if aborts(s.url) == 1 and metric(s.url, "fireside:num_requests_running") == 0:
                break
            threading.Event().wait(0.05)
        assert aborts(s.url) == 1
        assert metric(s.url, "fireside:num_requests_running") == 0
        assert metric(s.url, "fireside:kv_cache_usage_perc") == 0.0
        # The engine stopped early: fewer than the 1000 tokens asked for were made.
        assert metric(s.url, "fireside:generation_tokens_total") < 1000


def test_bundled_model_is_the_default_and_loads() -> None:
    """`make serve` with no --model serves the bundled model: present, loadable, chat-ready."""
    path = default_model_dir()
    assert path.name == "fireside-tiny"
    bundle = load_pretrained(path)
    assert bundle.model.dtype == torch.float32  # stored bf16; CPU serves fp32
    prompt = bundle.tokenizer.render_chat(
        [{"role": "user", "content": "Who are you?"}], add_generation_prompt=True
    )
    with torch.inference_mode():
        logits = bundle.model(torch.tensor([prompt.ids]))
    assert logits.shape[-1] == bundle.model.config.vocab_size and torch.isfinite(logits).all()
    assert bundle.stop_token_ids == [bundle.tokenizer.token_id("<|end|>")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fireside_serve_command(api_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "fireside.cli", "serve", "--model", str(api_model_dir)]
    cmd += ["--served-model-name", "cli-model", "--port", str(port), "--api-key", "sk-cli"]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0
        )
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            threading.Event().wait(0.1)
        r = client.chat.completions.create(model="cli-model", messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
        assert r.model == "cli-model" and r.usage is not None and r.usage.completion_tokens >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_fireside_serve_without_a_model_dir_fails_clearly(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fireside.cli", "serve", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "no config.json" in out.stderr
