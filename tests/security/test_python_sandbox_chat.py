"""Finding 1, through the product: every program of the escape corpus is sent as a chat
user's question to a running server whose model has the built-in tools, and the model (scripted
at the engine boundary) runs it with the `python` tool. The server's own data directory, its
secret key and its SQLite database are the targets; nothing gets out, and the user stays a user.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fireside.api.app import create_app
from fireside.api.served import ServedModel
from fireside.app import ChatApp
from fireside.engine import EngineConfig
from fireside.engine.types import (
    EngineClient,
    RequestOutput,
    SampleDelta,
    SamplingParams,
)
from fireside.model.tokenizer import Tokenizer
from fireside.model.tool_calls import tool_format
from fireside.server import load_served
from fireside.tools.python import TOOL_LIMITS
from tests.api_utils import run_app
from tests.app_utils import Backend, Client, EngineWrapper, chat_settings, make_admin
from tests.security.escape_corpus import CORPUS, render
from tests.security.sandbox_host import Host, host, survivors

pytestmark = pytest.mark.usefixtures("one_thread")
ASK = re.compile(r"\[py:(\d+)\]")
USER, TOOL = "<|user|>", "<|tool|>"


class ScriptedPythonEngine(EngineWrapper):
    """A question holding [py:N] is answered with a `python` call running corpus program N,
    in the model's own call format; after the tool's result, with a short sentence."""

    def __init__(self, engine: EngineClient, tokenizer: Tokenizer, facts: dict[str, str]) -> None:
        self.engine, self.tokenizer, self.facts = engine, tokenizer, facts
        self.fmt = tool_format(tokenizer)

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        last_user = self.tokenizer.decode(prompt_ids).rsplit(USER, 1)[-1]
        asked = ASK.search(last_user)
        assert asked is not None, "every question of this test names a program"
        if TOOL in last_user:
            pieces = ["It ran."]
        else:
            program = render(CORPUS[int(asked.group(1))].program, self.facts)
            call = json.dumps({"name": "python", "arguments": {"code": program}})
            pieces = ["Running it. ", self.fmt.start + call, self.fmt.end]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            sample = SampleDelta(0, piece, [1], finish_reason="stop" if last else None)
            yield RequestOutput(request_id, [sample], prompt_ids, finished=last)


@pytest.fixture(scope="module")
def server(
    api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Host]]:
    model_dir = tmp_path_factory.mktemp("python-tool-model") / "model"
    shutil.copytree(api_model_dir, model_dir)
    config_path = model_dir / "generation_config.json"
    config_path.write_text(
        json.dumps({**json.loads(config_path.read_text()), "fireside_tools": True})
    )
    backend = Backend("sqlite", tmp_path_factory.mktemp("python-tool-data"))
    settings = chat_settings(backend)
    settings.resolved_secret_key()  # the secret key file the attacks go after
    facts: dict[str, str] = {}  # the host's, filled in once it is set up

    async def load() -> ServedModel:
        served = await load_served(model_dir, "tiny", "cpu", EngineConfig(max_num_seqs=4))
        served.engine = ScriptedPythonEngine(served.engine, served.tokenizer, facts)
        return served

    app = create_app("tiny", load, extensions=[ChatApp(settings)])
    with run_app(app) as url:
        make_admin(backend)  # the first account; the attacker signs up after it, as a user
        with host(backend.data_dir, TOOL_LIMITS) as h:
            facts.update(h.facts)
            yield url, h


def test_the_escape_corpus_through_the_chat(server: tuple[str, Host]) -> None:
    url, target = server
    client = Client(url)
    client.signup("Mallory")
    before = target.snapshot()
    assert ("mallory" in repr(before["roles"]).lower()) and "admin" in repr(before["roles"])
    ran = 0
    for i, escape in enumerate(CORPUS):
        conversation = client.new_conversation()
        events = client.send(conversation["id"], f"[py:{i}] {escape.name}")
        results = [e.data for e in events if e.event == "tool_result"]
        assert len(results) == 1, (escape.name, [e.event for e in events])
        content = results[0]["content"]
        assert "ESCAPED" not in content, (escape.name, content)
        assert "exit status:" in content, (escape.name, content)  # the program really ran
        ran += 1
    assert ran == len(CORPUS) >= 30
    assert target.snapshot() == before  # the secret, the files, everyone's role
    assert target.accepted == [] and target.planted() == []
    assert target.sleeper is not None and target.sleeper.poll() is None
    time.sleep(0.2)
    assert survivors(target.facts["SURVIVOR_SECONDS"]) == []
    # The attacker is no admin by any route either.
    assert client.http.get("/admin/users").status_code == 403
