"""The scale test (issue 21's Must show): two gateways and two `fireside worker` processes over
PostgreSQL and Redis, on loopback.

32 chats at once, half through each gateway; one worker SIGKILLed mid-run: its answers end
with an error event and are stored `interrupted` with the text streamed so far, every other
answer completes, nothing stored before is lost; new chats go to the survivor; an answer
started on gateway 1 resumes on gateway 2; the killed worker restarts and takes requests again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.app_utils import (
    REDIS_URL,
    Client,
    SSEEvent,
    parse_sse,
    postgres_database,
    redis_available,
)
from tests.worker_utils import Proc, start_gateway, start_worker, stop_all, wait_ready, wait_serving

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_thread")]

CHATS = 32


@dataclass
class Cluster:
    workers: list[Proc]
    gateways: list[Proc]
    model_dir: Path
    log_dir: Path
    clients: list[Client] = field(default_factory=list)


@pytest.fixture
def cluster(api_model_dir: Path, tmp_path: Path) -> Iterator[Cluster]:
    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    t0 = time.monotonic()
    with postgres_database() as database_url:
        # All four start at once: the gateways import and migrate while the workers load.
        workers = [start_worker(api_model_dir, tmp_path, wait=False) for _ in range(2)]
        env = {
            "FIRESIDE_DATABASE_URL": database_url,
            "FIRESIDE_REDIS_URL": REDIS_URL,
            "FIRESIDE_DATA_DIR": str(tmp_path / "data"),
            "FIRESIDE_SECRET_KEY": "scale-test-secret-key-0123456789abcdef",
            "FIRESIDE_MAX_ANSWERS_PER_USER": "100",
            "FIRESIDE_APP_MAX_TOKENS": "600",
        }
        gateways = [
            start_gateway(workers, tmp_path, "--served-model-name", api_model_dir.name,
                          wait=False, **env)
            for _ in range(2)
        ]  # fmt: skip
        try:
            for proc in workers:
                wait_serving(proc)
            for proc in gateways:
                wait_ready(proc)
            print(f"cluster up in {time.monotonic() - t0:.1f} s")
            yield Cluster(workers, gateways, api_model_dir, tmp_path)
        finally:
            stop_all([*gateways, *workers])


@dataclass
class Chat:
    client: Client
    conversation_id: str
    events: list[SSEEvent] = field(default_factory=list)
    first_delta: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def send(self, content: str) -> None:
        try:
            path = f"/conversations/{self.conversation_id}/messages"
            with self.client.http.stream("POST", path, json={"content": content}) as r:
                assert r.status_code == 200, r.read().decode()
                for e in parse_sse(r.iter_lines()):
                    self.events.append(e)
                    if e.event == "delta":
                        self.first_delta.set()
        except BaseException as e:  # handed to the test's thread
            self.error = e
        finally:
            self.first_delta.set()

    def stored(self) -> list[dict[str, Any]]:
        r = self.client.http.get(f"/conversations/{self.conversation_id}")
        assert r.status_code == 200, r.text
        return list(r.json()["messages"])


def deltas(events: list[SSEEvent]) -> str:
    return "".join(e.data["text"] for e in events if e.event == "delta")


def signed_in(gateways: list[Proc]) -> list[Client]:
    """One user, signed up through gateway 1 and logged in through gateway 2 (sessions live in
    PostgreSQL)."""
    clients = [Client(g.url) for g in gateways]
    me = clients[0].signup("Scale")
    login = {"email": me["email"], "password": me["password"]}
    assert clients[1].http.post("/auth/login", json=login).status_code == 200
    return clients


def test_two_gateways_two_workers_survive_a_worker_kill(cluster: Cluster) -> None:
    started = time.monotonic()
    clients = signed_in(cluster.gateways)
    doomed, survivor = cluster.workers

    # A finished exchange stored before the run: it must be there, unchanged, at the end.
    before = Chat(clients[0], clients[0].new_conversation(max_tokens=8)["id"])
    before.send("Stored before the run")
    kept = before.stored()
    assert [m["status"] for m in kept][-1] == "complete"

    chats = [
        Chat(clients[i % 2], clients[i % 2].new_conversation(max_tokens=500)["id"])
        for i in range(CHATS)
    ]
    threads = [
        threading.Thread(target=c.send, args=(f"Chat number {i}: tell me about {i * 7919}",))
        for i, c in enumerate(chats)
    ]
    for t in threads:
        t.start()
    for c in chats:
        assert c.first_delta.wait(60)
    assert doomed.metric("fireside_worker_requests_total") > 0
    assert survivor.metric("fireside_worker_requests_total") > 0
    survivor_before = survivor.metric("fireside_worker_requests_total")
    doomed.kill()
    for t in threads:
        t.join(90)
        assert not t.is_alive()

    interrupted = complete = 0
    for c in chats:
        assert c.error is None, c.error
        assert c.events[-1].event == "done"
        final = c.events[-1].data["message"]
        stored = c.stored()[-1]
        assert stored["id"] == final["id"]
        # Whatever streamed is what is stored, to the character, whichever way it ended.
        assert deltas(c.events) == final["content"] == stored["content"]
        if stored["status"] == "interrupted":
            interrupted += 1
            errors = [e for e in c.events if e.event == "error"]
            assert len(errors) == 1 and doomed.address in errors[0].data["error"]
            assert stored["content"], "an interrupted answer keeps its partial text"
        else:
            assert stored["status"] == "complete", stored
            assert not any(e.event == "error" for e in c.events)
            complete += 1
    assert interrupted > 0 and complete > 0
    assert before.stored() == kept

    # New chats after the kill: all on the survivor, all complete.
    for i in range(4):
        chat = Chat(clients[i % 2], clients[i % 2].new_conversation(max_tokens=8)["id"])
        chat.send(f"After the kill {i}")
        assert chat.error is None and chat.stored()[-1]["status"] == "complete"
    assert survivor.metric("fireside_worker_requests_total") == survivor_before + 4

    # Started on gateway 1, resumed on gateway 2 from the last event it saw.
    conv = clients[0].new_conversation(max_tokens=200)["id"]
    first = clients[0].events(
        "POST", f"/conversations/{conv}/messages", limit=3, json={"content": "Resume me"}
    )
    rest = clients[1].events(
        "GET", f"/conversations/{conv}/stream", headers={"Last-Event-ID": first[-1].id}
    )
    events = first + rest
    assert len({e.id for e in events}) == len(events) and events[-1].event == "done"
    stored_resumed = Chat(clients[1], conv).stored()[-1]
    assert deltas(events) == stored_resumed["content"] and stored_resumed["status"] == "complete"

    # The killed worker comes back on its port; the gateways' health checks take it back in.
    back = start_worker(cluster.model_dir, cluster.log_dir, port=doomed.port)
    cluster.workers[0] = back
    deadline = time.monotonic() + 30
    i = 0
    while back.metric("fireside_worker_requests_total") == 0:
        assert time.monotonic() < deadline, "the restarted worker took no request"
        chat = Chat(clients[i % 2], clients[i % 2].new_conversation(max_tokens=4)["id"])
        chat.send(f"Back again {i}")
        assert chat.error is None and chat.stored()[-1]["status"] == "complete"
        i += 1
    print(f"scale test: {interrupted} interrupted, {complete} complete, "
          f"{time.monotonic() - started:.1f} s after start-up")  # fmt: skip
