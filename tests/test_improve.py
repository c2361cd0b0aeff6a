"""Improving the model from feedback, end to end on both backends, on a tiny model with a
ChatML template (no generation blocks: answers are found by rendering turn by turn).

Users chat, regenerate and rate with training consent; the admin starts a job through the
API and follows its progress over SSE; the evaluation compares the new model with the served
one; serving the new version needs no restart and new answers name it; serving the base
again rolls back. A full (non-LoRA) version swaps the engine; a job is cancelled; a job
interrupted by a server stop resumes at the next start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.cli import main
from fireside.model import Tokenizer, Transformer, save_pretrained
from tests.app_utils import (
    HOLD,
    REDIS_URL,
    Backend,
    Client,
    SSEEvent,
    chat_settings,
    make_admin,
    parse_sse,
    postgres_database,
    redis_available,
    run_chat_server,
)
from tests.conftest import tiny_config
from tests.family_templates import family_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TOPICS = ("rivers", "stars", "bread", "trains", "moss", "clocks", "owls", "salt")


@pytest.fixture(scope="module")
def chatml_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    tok = family_tokenizer(tokenizer, "qwen2.5")
    torch.manual_seed(0)
    model = Transformer(tiny_config(tok.vocab_size, max_position_embeddings=512))
    # LoRA leaves the head frozen: at a larger std than the usual 0.02 an adapter can move
    # the logits in a few steps (tests/test_lora.py does the same).
    model.init_weights(std=0.1)
    path = tmp_path_factory.mktemp("chatml")
    save_pretrained(model, tok, path)
    return path


@dataclass
class Served:
    url: str
    backend: Backend
    admin: Client
    user: Client


def _serve(backend: Backend, model: Path) -> Iterator[Served]:
    with run_chat_server(model, chat_settings(backend)) as url:
        admin, user = Client(url), Client(url)
        assert admin.http.post("/auth/login", json=make_admin(backend)).status_code == 200
        user.signup("Rae")
        yield Served(url, backend, admin, user)
        admin.close()
        user.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chatml_model: Path
) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp(f"improve-{request.param}")
    if request.param == "sqlite":
        yield from _serve(Backend("sqlite", data_dir), chatml_model)
        return
    if not redis_available():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    with postgres_database() as url:
        yield from _serve(Backend("postgres", data_dir, url, REDIS_URL), chatml_model)


def rate_regenerated_answers(user: Client, topics: tuple[str, ...]) -> None:
    """Per topic: a question, its answer regenerated until the two differ, the first rated
    up and the second down (with training consent)."""
    assert user.http.patch("/settings", json={"training_consent": True}).status_code == 200
    for topic in topics:
        conv = user.new_conversation(temperature=1.0)
        first = user.send(conv["id"], f"Tell me about {topic}.")[-1].data["message"]
        second = first
        for _ in range(5):
            regenerated = user.events("POST", f"/messages/{first['id']}/regenerate")
            second = regenerated[-1].data["message"]
            if second["content"] != first["content"]:
                break
        assert second["content"] != first["content"]
        for message, rating in ((first, "up"), (second, "down")):
            r = user.http.post(f"/messages/{message['id']}/feedback", json={"rating": rating})
            assert r.status_code == 200, r.text


def follow(admin: Client, job_id: str, last_event_id: str | None = None) -> list[SSEEvent]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return admin.events("GET", f"/admin/jobs/{job_id}/events", headers=headers)


def answer_model(user: Client) -> str:
    conv = user.new_conversation()
    done = user.send(conv["id"], "Hello?")[-1]
    assert done.event == "done", done
    return str(done.data["message"]["model"])


def version_named(admin: Client, name: str) -> dict[str, Any]:
    listed = admin.http.get("/admin/versions").json()
    return next(v for v in listed["data"] if v["name"] == name)


def test_feedback_trains_a_lora_version_that_serves_and_rolls_back(served: Served) -> None:
    admin, user = served.admin, served.user
    assert answer_model(user) == "tiny"
    rate_regenerated_answers(user, TOPICS)
    summary = admin.http.get("/admin/improve").json()
    assert summary["dpo_pairs"] == len(TOPICS) and summary["questions"] == len(TOPICS)
    assert summary["running_job"] is None and summary["served_version"] == "base"
    for bad in (
        {"method": "ppo"},
        {"steps": 0},
        {"lora_rank": 0},
        {"steps": "many"},
        {"method": "dpo", "extra": 1},
    ):
        r = admin.http.post("/admin/jobs", json=bad)
        assert r.status_code == 400, (bad, r.text)

    r = admin.http.post("/admin/jobs", json={"method": "dpo", "lora_rank": 8, "steps": 6})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["options"]["lora_rank"] == 8
    r = admin.http.post("/admin/jobs", json={"method": "sft", "steps": 2})
    assert r.status_code == 409  # one job at a time

    events = follow(admin, job["id"])
    kinds = [e.event for e in events]
    assert kinds[0] == "status" and kinds[-1] == "done", kinds
    statuses = [e.data["status"] for e in events if e.event in ("status", "done")]
    assert statuses == ["queued", "training", "evaluating", "done"], statuses
    progress = [e.data for e in events if e.event == "progress"]
    assert progress and progress[-1]["step"] == 6 and progress[-1]["total"] == 6
    assert all({"loss", "reward_margin", "eta_s"} <= p.keys() for p in progress)
    # Resuming after an event replays exactly the rest.
    rest = follow(admin, job["id"], events[1].id)
    assert [(e.id, e.event) for e in rest] == [(e.id, e.event) for e in events[2:]]

    job = admin.http.get(f"/admin/jobs/{job['id']}").json()
    assert job["status"] == "done" and job["error"] is None
    comparison = job["comparison"]
    held_out = comparison["held_out"]["pairs"]
    assert held_out >= 1  # ~15% of the questions
    for role in ("served", "candidate"):
        assert 0 <= comparison[role]["win_rate"] <= 1
        assert comparison[role]["bits_per_byte"] > 0
    assert "fireside_tools" in comparison["skipped"]["tool_eval"]  # not a tool model

    versions = admin.http.get("/admin/versions").json()
    assert versions["served"] == "base"
    base, v1 = versions["data"]
    assert (base["name"], base["kind"], base["served"]) == ("base", "base", True)
    assert (v1["name"], v1["kind"], v1["method"], v1["parent_id"]) == (
        "v1",
        "lora",
        "dpo",
        base["id"],
    )
    assert v1["id"] == job["version_id"] and v1["served"] is False
    assert v1["data"]["dpo_pairs"] == len(TOPICS) and v1["data"]["held_out_pairs"] == held_out
    assert v1["metrics"]["win_rate"] == comparison["candidate"]["win_rate"]

    # Serving the new version: no restart, and the next answer names it.
    r = admin.http.post(f"/admin/versions/{v1['id']}/serve")
    assert r.status_code == 200, r.text
    assert r.json()["served"] is True
    assert answer_model(user) == "tiny@v1"
    assert version_named(admin, "v1")["served"] is True
    # Rolling back is serving the base again.
    assert admin.http.post(f"/admin/versions/{base['id']}/serve").status_code == 200
    assert answer_model(user) == "tiny"
    assert admin.http.get("/admin/improve").json()["served_version"] == "base"


def test_a_full_version_swaps_the_engine_and_a_job_can_be_cancelled(served: Served) -> None:
    admin, user = served.admin, served.user
    if admin.http.get("/admin/improve").json()["dpo_pairs"] < 2:
        rate_regenerated_answers(user, TOPICS[:4])
    r = admin.http.post("/admin/jobs", json={"method": "dpo", "lora_rank": None, "steps": 2})
    assert r.status_code == 201, r.text
    events = follow(admin, r.json()["id"])
    assert events[-1].data["status"] == "done", events[-1].data
    listed = admin.http.get("/admin/versions").json()["data"]
    full = next(v for v in listed if v["id"] == events[-1].data["version_id"])
    assert full["kind"] == "full" and full["path"].endswith("/train")
    # An answer being written when the engine is swapped finishes on the old one.
    held = user.new_conversation(max_tokens=200)
    path = f"/conversations/{held['id']}/messages"
    with user.http.stream("POST", path, json={"content": f"{HOLD} keep going"}) as r:
        before = []
        for e in parse_sse(r.iter_lines()):
            before.append(e)
            if e.event == "delta":
                break  # the old engine holds it until it is stopped
    assert admin.http.post(f"/admin/versions/{full['id']}/serve").status_code == 200
    assert answer_model(user) == f"tiny@{full['name']}"
    assert user.http.post(f"/conversations/{held['id']}/stop").status_code == 200
    rest = user.events(
        "GET", f"/conversations/{held['id']}/stream", headers={"Last-Event-ID": before[-1].id}
    )
    finished = rest[-1].data["message"]
    assert (finished["status"], finished["model"]) == ("stopped", "tiny")
    assert finished["content"]
    base = version_named(admin, "base")
    assert admin.http.post(f"/admin/versions/{base['id']}/serve").status_code == 200
    assert answer_model(user) == "tiny"

    r = admin.http.post("/admin/jobs", json={"method": "sft", "lora_rank": 4, "steps": 500})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    cancelled = admin.http.post(f"/admin/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert follow(admin, job_id)[-1].data["status"] == "cancelled"
    assert admin.http.post(f"/admin/jobs/{job_id}/cancel").status_code == 409
    assert admin.http.get("/admin/improve").json()["running_job"] is None
    for path in (
        "/admin/jobs/00000000-0000-0000-0000-000000000000",
        "/admin/versions/00000000-0000-0000-0000-000000000000/serve",
    ):
        method = "POST" if path.endswith("serve") else "GET"
        assert admin.http.request(method, path).status_code == 404


def processes_mentioning(text: str) -> list[int]:
    """Pids of the processes whose command line holds `text` (a job's run directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                found.append(int(proc.name))
        except OSError:  # ended meanwhile
            continue
    return found


def test_a_job_interrupted_by_a_stop_resumes_at_the_next_start(
    tmp_path: Path, chatml_model: Path
) -> None:
    backend = Backend("sqlite", tmp_path)
    with run_chat_server(chatml_model, chat_settings(backend)) as url:
        admin, user = Client(url), Client(url)
        assert admin.http.post("/auth/login", json=make_admin(backend)).status_code == 200
        user.signup("Sol")
        rate_regenerated_answers(user, TOPICS[:4])
        r = admin.http.post("/admin/jobs", json={"method": "dpo", "lora_rank": 4, "steps": 40})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while admin.http.get(f"/admin/jobs/{job_id}").json()["progress"].get("step", 0) < 12:
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.2)
        admin.close()
        user.close()
    # The stopped server killed the training; the job waits, still `training`.
    assert not processes_mentioning(job_id)
    with run_chat_server(chatml_model, chat_settings(backend)) as url:
        admin = Client(url)
        assert admin.http.post("/auth/login", json=make_admin(backend)).status_code == 200
        events = follow(admin, job_id)
        assert events[-1].event == "done" and events[-1].data["status"] == "done", events[-1].data
        admin.close()
    log = (tmp_path / "improve" / job_id / "train.log").read_text()
    assert "resuming" in log  # from its checkpoint, not from the start


def test_the_command_line_improves_lists_and_chooses_versions(
    tmp_path: Path,
    chatml_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = Backend("sqlite", tmp_path)
    with run_chat_server(chatml_model, chat_settings(backend)) as url:
        user = Client(url)
        user.signup("Tam")
        rate_regenerated_answers(user, TOPICS[:4])
        user.close()
    monkeypatch.setenv("FIRESIDE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FIRESIDE_MODEL", str(chatml_model))
    assert main(["admin", "improve", "--method", "dpo", "--lora-rank", "4", "--steps", "3"]) == 0
    out, err = capsys.readouterr()
    comparison = json.loads(out)
    assert {"served", "candidate", "held_out", "skipped"} <= comparison.keys()
    assert "step 3/3" in err and "evaluating" in err
    assert main(["admin", "models"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["* base", "  v1"]
    assert main(["admin", "serve-version", "v1"]) == 0
    assert main(["admin", "serve-version", "v9"]) == 2
    # The next start serves the chosen version.
    with run_chat_server(chatml_model, chat_settings(backend)) as url:
        user = Client(url)
        user.signup("Uma")
        deadline = time.monotonic() + 60
        while (model := answer_model(user)) != "tiny@v1":
            assert time.monotonic() < deadline, model  # the version loads after the model
            time.sleep(0.2)
        # A job started while a LoRA version is served trains on its weights, merged.
        admin = Client(url)
        assert admin.http.post("/auth/login", json=make_admin(backend)).status_code == 200
        r = admin.http.post("/admin/jobs", json={"method": "sft", "lora_rank": 4, "steps": 2})
        assert r.status_code == 201, r.text
        assert follow(admin, r.json()["id"])[-1].data["status"] == "done"
        v2 = version_named(admin, "v2")
        assert v2["parent_id"] == version_named(admin, "v1")["id"] and v2["method"] == "sft"
        assert v2["data"]["base_model"].endswith("/start")  # v1 merged into its base
        assert admin.http.post(f"/admin/versions/{v2['id']}/serve").status_code == 200
        assert answer_model(user) == "tiny@v2"
        admin.close()
        user.close()
