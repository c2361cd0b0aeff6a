"""Server life: loading and death (503), API keys (401), a full queue (429), and clients that
give up (a cancellation storm leaves the engine idle and serving)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import torch

from fireside.api.app import create_app
from fireside.api.served import ServedModel
from fireside.engine import EngineConfig
from fireside.errors import CheckpointError
from fireside.model import load_pretrained
from fireside.model.pretrained import default_model_dir
from fireside.server import load_served
from tests.api_utils import GatedServer, run_app, run_gated_server, run_server

MESSAGES = [{"role": "user", "content": "hello"}]


def test_health_is_503_while_loading(api_model_dir: Path) -> None:
    gate = threading.Event()

    async def load() -> ServedModel:
        await asyncio.to_thread(gate.wait, 30)
        return await load_served(api_model_dir, "tiny")

    with run_app(create_app("tiny", load), wait_ready=False) as url:
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503
        assert "loading" in r.json()["error"]["message"]
        # The process is alive (no restart), just not ready for traffic.
        assert httpx.get(f"{url}/livez").status_code == 200
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 503
        gate.set()
        for _ in range(600):
            if httpx.get(f"{url}/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").json() == {"status": "ok"}
        r = httpx.post(
            f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}
        )
        assert r.status_code == 200


class LoopKilled(BaseException):
    """What a step's recovery does not catch (as SystemExit or KeyboardInterrupt would not)."""


async def until_forwards(s: GatedServer, count: int) -> None:
    await asyncio.to_thread(s.gate.wait_arrived, count)


async def step_until(s: GatedServer, done: Callable[[], bool]) -> None:
    """Lets the held engine take one forward at a time until `done()`: requests sent meanwhile
    reach the scheduler between steps, and nothing runs far ahead of the test."""
    deadline = time.monotonic() + 120  # only stops a hang; the outcome never depends on it
    while not done():
        held = s.gate.arrived
        s.gate.allow(1)
        while s.gate.arrived == held and not done():  # the next forward, or an idle engine
            assert time.monotonic() < deadline, (
                f"the engine never reached the awaited state: {s.engine.stats()}, "
                f"{s.gate.arrived} forwards arrived, {s.gate.passed} passed"
            )
            await asyncio.sleep(0.005)


def in_engine(s: GatedServer, count: int) -> Callable[[], bool]:
    return lambda: s.engine.stats().running + s.engine.stats().waiting == count


def sse_events(lines: list[str]) -> list[str]:
    return [line[6:] for line in lines if line.startswith("data: ")]


def test_engine_death_is_503_for_requests_in_flight_and_after(api_model_dir: Path) -> None:
    with run_gated_server(api_model_dir) as s:
        body = {"model": "tiny", "prompt": "def", "max_tokens": 500, "ignore_eos": True}
        body["temperature"] = 0
        streamed_began = asyncio.Event()

        async def streamed(c: httpx.AsyncClient) -> tuple[int, list[str]]:
            async with c.stream("POST", "/v1/completions", json=body | {"stream": True}) as r:
                # The status comes with the first output; its text may be empty (part of a
                # character), so the first event may wait for the next token.
                streamed_began.set()
                return r.status_code, [line async for line in r.aiter_lines()]

        async def main() -> tuple[tuple[int, list[str]], httpx.Response]:
            async with httpx.AsyncClient(base_url=s.url, timeout=120) as c:
                s.gate.close()
                stream_task = asyncio.create_task(streamed(c))
                await until_forwards(s, 1)
                s.gate.allow(1)  # its prefill: the stream has begun
                await streamed_began.wait()
                whole_task = asyncio.create_task(c.post("/v1/completions", json=body))
                await step_until(s, in_engine(s, 2))
                s.gate.fail(LoopKilled())  # the engine loop dies inside a step
                return await stream_task, await whole_task

        (status, lines), whole = asyncio.run(main())
        # The stream had begun (200): it ends with an error event, then [DONE].
        assert status == 200
        events = sse_events(lines)
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "service_unavailable" and "LoopKilled" in error["message"]
        assert all("choices" in json.loads(e) for e in events[:-2])
        # The request that had no answer yet gets the status itself.
        assert whole.status_code == 503
        assert whole.json()["error"]["type"] == "service_unavailable"
        assert whole.headers["retry-after"]
        health = httpx.get(f"{s.url}/health")
        assert health.status_code == 503 and "stopped" in health.json()["error"]["message"]
        assert httpx.get(f"{s.url}/readyz").status_code == 503
        assert httpx.get(f"{s.url}/livez").status_code == 200
        late = httpx.post(
            f"{s.url}/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES}
        )
        assert late.status_code == 503
        assert late.json()["error"]["type"] == "service_unavailable"


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
        for probe in ("/health", "/livez", "/readyz"):  # probes need no key
            assert httpx.get(f"{s.url}{probe}").status_code == 200
        assert httpx.get(f"{s.url}/metrics").status_code == 401


def test_full_queue_is_429(api_model_dir: Path) -> None:
    # One running and one waiting request fill this engine; a third is refused, not queued.
    config = EngineConfig(max_num_seqs=1, max_waiting=1)
    with run_gated_server(api_model_dir, config) as s:
        body = {"model": "tiny", "prompt": "def", "max_tokens": 30, "ignore_eos": True}

        async def main() -> tuple[httpx.Response, list[httpx.Response]]:
            async with httpx.AsyncClient(base_url=s.url, timeout=120) as c:
                s.gate.close()  # the first two stay in flight until the third is answered
                two = [asyncio.create_task(c.post("/v1/completions", json=body)) for _ in "ab"]
                await until_forwards(s, 1)
                await step_until(s, in_engine(s, 2))
                third = await c.post("/v1/completions", json=body)
                s.gate.open()
                return third, list(await asyncio.gather(*two))

        third, two = asyncio.run(main())
        assert third.status_code == 429
        assert third.json()["error"]["type"] == "rate_limit_error"
        assert third.headers["retry-after"]
        assert [r.status_code for r in two] == [200, 200]
        assert all(r.json()["usage"]["completion_tokens"] == 30 for r in two)


def metric(url: str, name: str, labels: str = "", default: float | None = None) -> float:
    """The sum over a metric's label sets (those containing `labels`); `default` if none."""
    lines = [
        line
        for line in httpx.get(f"{url}/metrics").text.splitlines()
        if line.startswith(name + "{") and labels in line
    ]
    if not lines and default is not None:
        return default
    assert lines, f"{name} not exported"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_cancellation_storm_leaves_engine_idle(api_model_dir: Path) -> None:
    with run_gated_server(api_model_dir) as s:

        async def one(c: openai.AsyncOpenAI, i: int) -> None:
            kwargs = dict(model="tiny", max_tokens=400, extra_body={"ignore_eos": True})
            if i % 2:
                stream = await c.chat.completions.create(
                    messages=MESSAGES,
                    stream=True,
                    **kwargs,  # type: ignore[arg-type]
                )
                async for _ in stream:
                    pass
            else:
                await c.completions.create(prompt=f"def f{i}():", **kwargs)  # type: ignore[arg-type]

        async def storm() -> list[BaseException | None]:
            async with openai.AsyncOpenAI(
                base_url=s.base_url, api_key="x", max_retries=0, timeout=120
            ) as c:
                s.gate.close()  # no request can finish: every one is cut off by its client
                tasks = [asyncio.create_task(one(c, i)) for i in range(200)]
                await until_forwards(s, 1)
                # All 200 in the engine: 64 decoding (some streaming already), the rest queued.
                await step_until(s, in_engine(s, 200))
                for task in tasks:
                    task.cancel()  # the clients hang up
                results = await asyncio.gather(*tasks, return_exceptions=True)
                s.gate.open()
                return results

        results = asyncio.run(storm())
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        for _ in range(600):  # the engine reads the aborts between steps; poll until it has
            if s.engine.stats().running == 0 and s.engine.stats().waiting == 0:
                break
            threading.Event().wait(0.05)
        assert metric(s.url, "fireside:num_requests_running") == 0
        assert metric(s.url, "fireside:num_requests_waiting") == 0
        assert metric(s.url, "fireside:kv_cache_usage_perc") == 0.0
        assert aborts(s.url) == 200
        # And it still serves.
        patient = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0)
        r = patient.completions.create(model="tiny", prompt="import os", max_tokens=4)
        assert r.usage is not None and r.usage.completion_tokens >= 1


def aborts(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return metric(url, "fireside:request_success_total", '"abort"') if '"abort"' in text else 0.0


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_its_request(api_model_dir: Path, stream: bool) -> None:
    with run_gated_server(api_model_dir) as s:
        body = {
            "model": "tiny",
            "prompt": "def",
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": stream,
        }

        async def main() -> None:
            async with httpx.AsyncClient(base_url=s.url, timeout=120) as c:
                s.gate.close()
                began = asyncio.Event()

                async def ask() -> None:
                    if not stream:
                        await c.post("/v1/completions", json=body)
                        return
                    async with c.stream("POST", "/v1/completions", json=body) as r:
                        began.set()  # the status comes with the first output
                        async for _ in r.aiter_lines():
                            pass

                task = asyncio.create_task(ask())
                await until_forwards(s, 1)  # its prefill: the request is in the engine
                if stream:
                    s.gate.allow(1)
                    await began.wait()  # generation has begun
                task.cancel()  # now hang up
                await asyncio.gather(task, return_exceptions=True)
                # The server notices, and the engine ends the request at its next step.
                await step_until(s, lambda: s.engine.stats().running == 0)

        asyncio.run(main())
        assert aborts(s.url) == 1
        assert metric(s.url, "fireside:num_requests_running") == 0
        assert metric(s.url, "fireside:kv_cache_usage_perc") == 0.0
        # The engine stopped early: a few of the 1000 tokens asked for were made.
        # (None at all when the client left before the first token reached the API.)
        assert metric(s.url, "fireside:generation_tokens_total", default=0) < 1000


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
