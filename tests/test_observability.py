"""Request ids (X-Request-ID in and out, in every log line of the request, JSON or text),
readiness through the engine client's health (a gateway's: its workers'), and HTTP metrics
by route template."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fireside import logs
from fireside.api.app import create_app
from fireside.api.request_id import RequestIdMiddleware
from fireside.api.served import ServedModel
from fireside.server import load_served
from tests.api_utils import run_app
from tests.app_utils import EngineWrapper

pytestmark = pytest.mark.usefixtures("one_thread")


class SwitchableHealth(EngineWrapper):
    """As a gateway's client of its workers: healthy while at least one worker is."""

    healthy_workers = 1

    def is_healthy(self) -> bool:
        return self.healthy_workers > 0 and self.engine.is_healthy()


@pytest.fixture(scope="module")
def server(api_model_dir: Path) -> Iterator[tuple[str, list[ServedModel]]]:
    loaded: list[ServedModel] = []

    async def load() -> ServedModel:
        served = await load_served(api_model_dir, "tiny", "cpu")
        served.engine = SwitchableHealth(served.engine)
        loaded.append(served)
        return served

    with run_app(create_app("tiny", load)) as url:
        yield url, loaded


def test_request_id_in_and_out(server: tuple[str, list[ServedModel]]) -> None:
    url, _ = server
    given = "0f8e-req.42:edge/1"
    assert (
        httpx.get(f"{url}/v1/models", headers={"X-Request-ID": given}).headers["x-request-id"]
        == given
    )
    made = {httpx.get(f"{url}/livez").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3  # a fresh id each
    for bad in ("x" * 200, "two words", "-leading-dash", 'quote"d', "new\\nline"):
        echoed = httpx.get(f"{url}/livez", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert echoed != bad and len(echoed) == 32
    # Errors carry it too (the guard's 413, a 404).
    r = httpx.post(
        f"{url}/v1/completions", content=b"x" * (9 << 20), headers={"X-Request-ID": "big"}
    )
    assert r.status_code == 413 and r.headers["x-request-id"] == "big"
    assert (
        httpx.get(f"{url}/v1/nope", headers={"X-Request-ID": "nf"}).headers["x-request-id"] == "nf"
    )


def test_readyz_follows_the_engine_clients_health(server: tuple[str, list[ServedModel]]) -> None:
    url, loaded = server
    engine = loaded[0].engine
    assert isinstance(engine, SwitchableHealth)
    assert httpx.get(f"{url}/readyz").status_code == 200
    engine.healthy_workers = 0  # every worker gone: out of the load balancer, but alive
    try:
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        assert httpx.get(f"{url}/livez").status_code == 200
    finally:
        engine.healthy_workers = 1
    assert httpx.get(f"{url}/readyz").status_code == 200


def _samples(text: str, name: str) -> dict[str, float]:
    """A metric's samples by their label text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def test_http_metrics_by_route_template(server: tuple[str, list[ServedModel]]) -> None:
    url, _ = server
    for model in ("tiny", "other-a", "other-b"):
        httpx.get(f"{url}/v1/models/{model}")
    httpx.get(f"{url}/no/such/route/abc123")
    body = {"model": "tiny", "prompt": "x", "max_tokens": 3, "ignore_eos": True}
    assert httpx.post(f"{url}/v1/completions", json=body).status_code == 200
    text = httpx.get(f"{url}/metrics").text
    counts = _samples(text, "fireside:http_requests_total")
    route = 'route="/v1/models/{model_id}"'
    assert counts[f'{{method="GET",{route},status="200"}}'] >= 1
    assert counts[f'{{method="GET",{route},status="404"}}'] >= 2
    # No label carries a path's own ids: unknown paths share one series.
    assert not any("other-a" in k or "abc123" in k for k in counts)
    assert counts['{method="GET",route="unmatched",status="404"}'] >= 1
    latency = _samples(text, "fireside:http_request_duration_seconds_count")
    assert latency[f'{{method="GET",{route}}}'] >= 3
    # Engine-side: tokens generated and the queue's depth are there beside them.
    assert _samples(text, "fireside:generation_tokens_total")['{model_name="tiny"}'] >= 3
    post = _samples(text, "fireside:http_requests_total")
    assert post['{method="POST",route="/v1/completions",status="200"}'] >= 1
    assert "fireside:num_requests_waiting" in text


def test_every_log_line_of_a_request_carries_its_id() -> None:
    """Through the JSON formatter: a line logged inside the request (by a task it started
    too), and none outside it."""
    app = FastAPI()
    log = logging.getLogger("fireside.test_observability")

    @app.get("/work")
    async def work() -> dict[str, str]:
        log.info("working")
        await asyncio.create_task(_log_later(log))  # a task copies the request's context
        return {"ok": "yes"}

    app.add_middleware(RequestIdMiddleware)
    stream = io.StringIO()
    config = logs.log_config("json")
    config["handlers"]["stderr"]["stream"] = stream
    del config["root"]  # only this test's logger, not the whole test process
    config["loggers"] = {log.name: {"level": "INFO", "handlers": ["stderr"], "propagate": False}}
    logging.config.dictConfig(config)
    try:

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.get("/work", headers={"X-Request-ID": "abc-1"})

        r = asyncio.run(call())
        log.info("outside")
    finally:
        logging.getLogger(log.name).handlers.clear()
    assert r.headers["x-request-id"] == "abc-1"
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [(x["msg"], x["request_id"]) for x in lines] == [
        ("working", "abc-1"),
        ("later", "abc-1"),
        ("outside", None),
    ]
    assert all({"ts", "level", "logger"} <= x.keys() for x in lines)


async def _log_later(log: logging.Logger) -> None:
    log.info("later")


def test_text_logs_name_the_request_or_a_dash() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    formatter = logging.Formatter(logs.TEXT_FORMAT)
    outside = logs.RequestIdFilter(missing="-")
    outside.filter(record)
    assert formatter.format(record).endswith("x [-] hello")
    token = logs.request_id.set("r-9")
    try:
        outside.filter(record)
    finally:
        logs.request_id.reset(token)
    assert formatter.format(record).endswith("x [r-9] hello")


def test_logs_import_no_web_stack() -> None:
    """The worker logs through fireside.logs and must start without the web stack."""
    import subprocess
    import sys

    check = (
        "import sys, fireside.logs as l\nl.configure('json')\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'starlette', 'sqlalchemy', 'uvicorn')))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == ""
