"""The loop, end to end: people chat with a model served by `fireside serve`, rate and
regenerate its answers; the admin exports the consented preferences as DPO data (over HTTP
and with `fireside admin export-feedback`); `fireside train dpo` trains the model on them; a
second `fireside serve` serves the trained model to the official `openai` client.

Every hop is a real process or a real command, talking through files and HTTP only, as the
design says the loop closes (training never reads the app's database)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from safetensors.torch import load_file

from fireside.model import Tokenizer
from fireside.train.chat_data import load_dpo_file
from tests.api_utils import make_model_dir
from tests.app_utils import Client

FIRESIDE = [sys.executable, "-m", "fireside.cli"]
SERVED_NAME = "tiny-chat"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(data_dir: Path) -> dict[str, str]:
    """The app on SQLite in its own data directory, with the in-process event log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRESIDE_")}
    env.update(
        FIRESIDE_DATA_DIR=str(data_dir),
        FIRESIDE_APP_MAX_TOKENS="8",  # short answers: a tiny random model babbles
        FIRESIDE_JEMALLOC="0",
        OMP_NUM_THREADS="1",  # a shared machine: one thread per process is plenty for width 64
    )
    return env


@contextmanager
def fireside_serve(model_dir: Path, name: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`fireside serve` in a process of its own; yields its URL once the model is loaded."""
    port = free_port()
    cmd = [*FIRESIDE, "serve", "--model", str(model_dir), "--served-model-name", name]
    cmd += ["--port", str(port), "--max-num-seqs", "4"]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(1200):  # up to two minutes on a loaded machine
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, log.read_text()
                threading.Event().wait(0.1)
            else:
                raise AssertionError(f"the server never became ready:\n{log.read_text()}")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def fireside(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        [*FIRESIDE, *args], env=env, input=stdin, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"fireside {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def answer_of(events: list[Any]) -> dict[str, Any]:
    assert events[-1].event == "done", [e.event for e in events]
    message = dict(events[-1].data["message"])
    assert message["status"] == "complete", message
    return message


def chat_rate_and_regenerate(client: Client, marker: str) -> tuple[dict[str, Any], ...]:
    """Asks a question, rates the answer down, regenerates until the new answer differs (the
    model samples), rates that one up and keeps it on show: a preference between siblings."""
    conversation = client.new_conversation(temperature=1.0)
    first = answer_of(client.send(conversation["id"], marker))
    assert first["content"], "the model answered nothing; the pair would be useless"
    down = {"rating": "down", "reason": "wrong", "comment": "not what I asked"}
    r = client.http.post(f"/messages/{first['id']}/feedback", json=down)
    assert r.status_code == 200, r.text
    for _ in range(8):
        second = answer_of(client.events("POST", f"/messages/{first['id']}/regenerate"))
        if second["content"] and second["content"] != first["content"]:
            break
    else:
        raise AssertionError("eight regenerations all repeated the first answer")
    assert second["parent_id"] == first["parent_id"]  # a sibling, not a reply
    up = {"rating": "up", "reason": "accurate"}
    r = client.http.post(f"/messages/{second['id']}/feedback", json=up)
    assert r.status_code == 200, r.text
    shown = client.http.patch(
        f"/conversations/{conversation['id']}", json={"current_leaf_id": second["id"]}
    )
    assert shown.status_code == 200, shown.text
    return conversation, first, second


def first_token_logprob(url: str, model: str, prompt: list[dict[str, str]]) -> tuple[str, float]:
    """A greedy answer through the official client, and its first token's log-probability:
    different weights give a different number."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(
        model=model,
        messages=prompt,  # type: ignore[arg-type]
        max_tokens=4,
        temperature=0,
        logprobs=True,
    )
    assert r.model == model and r.usage is not None and r.usage.completion_tokens >= 1
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.logprobs is not None and choice.logprobs.content
    return choice.message.content or "", choice.logprobs.content[0].logprob


def test_feedback_trains_the_model_that_is_served_next(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    base = make_model_dir(tokenizer, tmp_path / "base", context=256)
    env = app_env(tmp_path / "data")
    admin_login = {"email": "admin@example.com", "password": "admin-password"}
    out = fireside(
        "admin", "create-user", admin_login["email"], "--admin", "--password-stdin",
        env=env, stdin=admin_login["password"] + "\n",
    )  # fmt: skip
    assert "created admin@example.com (admin)" in out

    export_path = tmp_path / "dpo.jsonl"
    with fireside_serve(base, SERVED_NAME, env, tmp_path / "serve-1.log") as url:
        # Two people chat; only Ann lets her chats train the model.
        ann, bob = Client(url), Client(url)
        ann.signup("Ann")
        bob.signup("Bob")
        r = ann.http.patch("/settings", json={"training_consent": True})
        assert r.json()["training_consent"] is True
        assert bob.http.get("/settings").json()["training_consent"] is False
        _, rejected, chosen = chat_rate_and_regenerate(ann, "Ann asks: which colour is the sky?")
        # Bob does exactly the same; his pair must not leave the server.
        chat_rate_and_regenerate(bob, "Bob asks: which colour is grass?")

        # The admin exports the preferences, over HTTP and with the command line.
        assert ann.http.get("/admin/feedback/export", params={"format": "dpo"}).status_code == 403
        admin = Client(url)
        assert admin.http.post("/auth/login", json=admin_login).status_code == 200
        exported = admin.http.get("/admin/feedback/export", params={"format": "dpo"})
        assert exported.status_code == 200, exported.text
        pairs = [json.loads(line) for line in exported.text.splitlines()]
        assert pairs == [
            {
                "prompt": [{"role": "user", "content": "Ann asks: which colour is the sky?"}],
                "chosen": {"role": "assistant", "content": chosen["content"]},
                "rejected": {"role": "assistant", "content": rejected["content"]},
                "model": SERVED_NAME,
            }
        ]
        out = fireside(
            "admin", "export-feedback", "--format", "dpo", "--output", str(export_path), env=env
        )
        assert "wrote 1 dpo example(s)" in out
        assert export_path.read_text() == exported.text
        prompt = pairs[0]["prompt"]
        base_answer = first_token_logprob(url, SERVED_NAME, prompt)
        for c in (ann, bob, admin):
            c.close()

    # `fireside train dpo` reads the export as it is.
    assert len(load_dpo_file(export_path, tokenizer, 256)) == 1
    run = tmp_path / "dpo-run"
    fireside(
        "train", "dpo", "--model", str(base), "--data", str(export_path), "--output", str(run),
        "--steps", "2", "--batch-size", "1", "--lr", "1e-3", "--optimizer", "adamw",
        "--device", "cpu", "--no-progress",
        env=env,
    )  # fmt: skip
    before = load_file(base / "model.safetensors")
    after = load_file(run / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [name for name in before if not before[name].equal(after[name])]
    assert changed, "two DPO steps at lr 1e-3 left every weight as it was"

    # The trained model, served by a fresh `fireside serve`, answers the official client.
    served_env = app_env(tmp_path / "data-2")
    with fireside_serve(run, "tiny-dpo", served_env, tmp_path / "serve-2.log") as url:
        models = openai.OpenAI(base_url=f"{url}/v1", api_key="unused").models.list()
        assert [m.id for m in models.data] == ["tiny-dpo"]
        trained_answer = first_token_logprob(url, "tiny-dpo", prompt)
    # The same prompt, greedily: the served weights are the trained ones, not the base's.
    assert trained_answer[1] != pytest.approx(base_answer[1], abs=1e-6)
