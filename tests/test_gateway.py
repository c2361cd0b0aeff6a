"""A gateway (`fireside serve --workers`) over two real worker processes: conversations keep to
the worker holding their prefix, and a client leaving aborts its request on the worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.worker_utils import Gateway, run_gateway_with

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def gateway(api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_gateway_with(api_model_dir, tmp_path_factory.mktemp("gateway")) as g:
        yield g


def test_a_conversation_returns_to_the_worker_that_holds_its_prefix(gateway: Gateway) -> None:
    """Through a real gateway over two workers: each conversation's second turn lands where its
    first ran (its prompt's blocks are cached there), and the conversations use both workers."""
    client = openai.OpenAI(base_url=gateway.server.base_url, api_key="-", max_retries=0)
    workers = gateway.workers
    # Rendezvous hashing over the workers' addresses (random ports) places each new
    # conversation at random: 12 of them all on one worker has odds of 1 in 2048.
    for i in range(12):
        history = [{"role": "user", "content": f"Conversation {i}: " + "tell me more " * 20}]
        counts = [w.metric("fireside_worker_requests_total") for w in workers]
        first = client.chat.completions.create(model="tiny", messages=history, max_tokens=4)  # type: ignore[arg-type]
        ran = [
            w.metric("fireside_worker_requests_total") - c
            for w, c in zip(workers, counts, strict=True)
        ]
        assert sorted(ran) == [0, 1]
        home = workers[ran.index(1)]
        hits = home.metric("fireside_worker_prefix_cache_hits_total")
        history += [
            {"role": "assistant", "content": first.choices[0].message.content or ""},
            {"role": "user", "content": "and then?"},
        ]
        client.chat.completions.create(model="tiny", messages=history, max_tokens=4)  # type: ignore[arg-type]
        assert home.metric("fireside_worker_requests_total") == counts[workers.index(home)] + 2
        assert home.metric("fireside_worker_prefix_cache_hits_total") > hits
    assert all(w.metric("fireside_worker_requests_total") > 0 for w in workers)


def test_a_client_leaving_aborts_its_request_on_the_worker(gateway: Gateway) -> None:
    workers = gateway.workers
    cancelled = sum(w.metric("fireside_worker_cancelled_total") for w in workers)
    body = {
        "model": "tiny", "prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True,
        "stream": True,
    }  # fmt: skip
    with httpx.stream("POST", f"{gateway.server.base_url}/completions", json=body) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        assert sum(w.metric("fireside_worker_num_requests_running") for w in workers) == 1
    # The connection is closed with most of the 900 tokens still to come.
    deadline = time.monotonic() + 10
    while sum(w.metric("fireside_worker_num_requests_running") for w in workers) != 0:
        assert time.monotonic() < deadline, "the worker is still generating for no one"
        time.sleep(0.05)
    assert sum(w.metric("fireside_worker_cancelled_total") for w in workers) == cancelled + 1


def test_the_app_on_sqlite_keeps_a_lost_answer_interrupted(
    api_model_dir: Path, tmp_path: Path
) -> None:
    """The chat app through a gateway on the other backend (SQLite, in-process events): an
    answer completes; then its worker dies mid-answer, and the answer ends with an error event
    and is stored `interrupted` with exactly the text streamed."""
    from fireside.server import build_app
    from fireside.settings import Settings
    from tests.api_utils import run_app
    from tests.app_utils import Client, parse_sse
    from tests.worker_utils import start_worker

    doomed = start_worker(api_model_dir, tmp_path, "--served-model-name", "tiny")
    try:
        settings = Settings(workers=doomed.address, data_dir=tmp_path / "data", app_max_tokens=900)
        with run_app(build_app(settings)) as url:
            client = Client(url)
            client.signup("Lite")
            done = client.send(client.new_conversation(max_tokens=4)["id"], "hello")
            assert done[-1].event == "done"
            assert done[-1].data["message"]["status"] == "complete"

            conv = client.new_conversation(max_tokens=900)["id"]
            events = []
            path = f"/conversations/{conv}/messages"
            with client.http.stream("POST", path, json={"content": "go on"}) as r:
                for e in parse_sse(r.iter_lines()):
                    events.append(e)
                    if e.event == "delta" and doomed.popen.poll() is None:
                        doomed.kill()
            streamed = "".join(e.data["text"] for e in events if e.event == "delta")
            errors = [e for e in events if e.event == "error"]
            assert len(errors) == 1 and doomed.address in errors[0].data["error"]
            stored = client.http.get(f"/conversations/{conv}").json()["messages"][-1]
            assert stored["status"] == "interrupted"
            assert stored["content"] == streamed != ""
            client.close()
    finally:
        doomed.stop()


def test_sampled_answers_and_logprobs_match_a_local_server(
    gateway: Gateway, api_model_dir: Path
) -> None:
    """Seeded sampling through the gateway gives what the model in the server's own process
    gives: the sampling settings and logprobs cross the wire exactly."""
    from tests.api_utils import run_server

    ask = dict(
        model="tiny", messages=[{"role": "user", "content": "Say something"}], max_tokens=16,
        temperature=0.9, top_p=0.95, seed=7, logprobs=True, top_logprobs=2,
        frequency_penalty=0.3, logit_bias={"17": 2.5},
    )  # fmt: skip
    remote = openai.OpenAI(base_url=gateway.server.base_url, api_key="-", max_retries=0)
    with run_server(api_model_dir) as local_server:
        local = openai.OpenAI(base_url=local_server.base_url, api_key="-", max_retries=0)
        want = local.chat.completions.create(**ask)  # type: ignore[call-overload]
    got = remote.chat.completions.create(**ask)  # type: ignore[call-overload]
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.choices[0].logprobs == want.choices[0].logprobs
