"""Tool calls in the chat app: a model trained with the built-in tools ("fireside_tools": true)
answers through the tool loop; the calls and results are events of the log (resumable like
deltas) and messages of the tree, and later turns see them in the prompt.

The model is a tiny random one; which tool it calls is scripted at the engine boundary (an
EngineClient that writes a call for a marked question), so the calculator really runs."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

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
from fireside.train.chat_data import LengthReport, load_sft_file
from tests.api_utils import run_app
from tests.app_utils import (
    Backend,
    Client,
    EngineWrapper,
    SSEEvent,
    chat_settings,
    make_admin,
    parse_sse,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CALC = "[calc]"  # a question holding this is answered with a calculator call, then its result
HOLD = "[hold]"  # ...and with this too, the answer after the result waits to be stopped
USER, TOOL = "<|user|>", "<|tool|>"


class ScriptedToolEngine(EngineWrapper):
    """The real engine, except for a question marked CALC: the first generation writes a
    little text and a calculator call in the model's own call format; the one after the
    tool's result answers with it. Every prompt is kept, to check what the model was shown."""

    def __init__(self, engine: EngineClient, tokenizer: Tokenizer) -> None:
        self.engine, self.tokenizer = engine, tokenizer
        fmt = tool_format(tokenizer)
        call = json.dumps({"name": "calculator", "arguments": {"expression": "6*7"}})
        self.call_pieces = ["Let me ", "compute. ", fmt.start + call, fmt.end]
        self.prompts: list[str] = []

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        prompt = self.tokenizer.decode(prompt_ids)
        self.prompts.append(prompt)
        last_user = prompt.rsplit(USER, 1)[-1]
        if CALC not in last_user:
            async for out in self.engine.generate(prompt_ids, params, request_id):
                yield out
            return
        # After the result: the answer that reads it.
        pieces = ["The answer ", "is 42."] if TOOL in last_user else self.call_pieces
        hold = HOLD in last_user and TOOL in last_user
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            sample = SampleDelta(0, piece, [1], finish_reason="stop" if last else None)
            yield RequestOutput(request_id, [sample], prompt_ids, finished=last)
            if hold:
                await asyncio.Event().wait()  # until the answer is stopped (cancelled)


@pytest.fixture(scope="module")
def tools_model_dir(api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, marked as trained with the built-in tools."""
    path = tmp_path_factory.mktemp("tools-model") / "model"
    shutil.copytree(api_model_dir, path)
    config_path = path / "generation_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "fireside_tools": True}))
    return path


@pytest.fixture
def tools_server(
    tools_model_dir: Path, chat_backend: Backend, tmp_path: Path
) -> Iterator[tuple[str, ScriptedToolEngine, Backend]]:
    engines: list[ScriptedToolEngine] = []

    async def load() -> ServedModel:
        served = await load_served(tools_model_dir, "tiny", "cpu", EngineConfig(max_num_seqs=4))
        assert served.tools  # read from generation_config.json
        engine = ScriptedToolEngine(served.engine, served.tokenizer)
        engines.append(engine)
        served.engine = engine
        return served

    # SQLite: a database of this test's own; PostgreSQL: the session's, shared as usual.
    backend = Backend("sqlite", tmp_path) if chat_backend.name == "sqlite" else chat_backend
    app: FastAPI = create_app("tiny", load, extensions=[ChatApp(chat_settings(backend))])
    with run_app(app) as url:
        yield url, engines[0], backend


def names(events: list[SSEEvent]) -> list[str]:
    """Event names, a run of deltas as one."""
    out: list[str] = []
    for e in events:
        if not (e.event == "delta" and out and out[-1] == "delta"):
            out.append(e.event)
    return out


def texts(events: list[SSEEvent], message_id: str) -> str:
    return "".join(
        e.data["text"] for e in events if e.event == "delta" and e.data["message_id"] == message_id
    )


def test_tool_calls_are_events_and_messages_and_resume(
    tools_server: tuple[str, ScriptedToolEngine, Backend],
) -> None:
    url, engine, backend = tools_server
    client = Client(url)
    me = client.signup()
    conversation = client.new_conversation()
    events = client.send(conversation["id"], f"{CALC} What is 6 times 7?")

    assert names(events) == [
        "message", "message", "delta", "tool_call", "tool_result", "message", "delta", "done",
    ]  # fmt: skip
    user, caller, result, answer = (
        events[0].data,
        events[1].data,
        next(e.data for e in events if e.event == "tool_result"),
        events[-1].data["message"],
    )
    call = next(e.data for e in events if e.event == "tool_call")
    assert call["message_id"] == caller["id"] and call["name"] == "calculator"
    assert json.loads(call["arguments"]) == {"expression": "6*7"}
    assert texts(events, caller["id"]).strip() == "Let me compute."  # the markup never shows
    # The calculator really ran.
    assert result["content"] == "42" and result["error"] is False
    assert result["parent_id"] == caller["id"] and result["tool_call_id"] == call["id"]
    nxt = [e.data for e in events if e.event == "message"][2]
    assert nxt["parent_id"] == result["message_id"] and nxt["role"] == "assistant"
    assert answer["id"] == nxt["id"] and answer["status"] == "complete"
    assert answer["content"] == texts(events, answer["id"]) == "The answer is 42."
    ids = [tuple(int(part) for part in e.id.split("-")) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # The tree: one path, the call and its result between the question and the answer.
    stored = client.http.get(f"/conversations/{conversation['id']}").json()
    assert stored["current_leaf_id"] == answer["id"]
    path = stored["messages"]
    assert [(m["role"], m["status"]) for m in path] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "complete"),
        ("assistant", "complete"),
    ]
    assert [m["id"] for m in path] == [user["id"], caller["id"], result["message_id"], answer["id"]]
    stored_call = {
        "id": call["id"],
        "type": "function",
        "function": {"name": "calculator", "arguments": call["arguments"]},
    }
    assert path[1]["content"].strip() == "Let me compute."
    assert path[1]["tool_calls"] == [stored_call]
    assert path[2]["content"] == "42" and path[2]["tool_calls"] == [stored_call]
    assert path[3]["content"] == "The answer is 42." and path[3]["tool_calls"] is None

    # Resume replays the calls and results like the deltas: from any event, the rest.
    for cut in (1, 3, 4):
        replay = client.events(
            "GET",
            f"/conversations/{conversation['id']}/stream",
            headers={"Last-Event-ID": events[cut - 1].id},
        )
        assert [(e.id, e.event, e.data) for e in replay] == [
            (e.id, e.event, e.data) for e in events[cut:]
        ]

    # Usage counts both generations of the answer (the scripted ones: 4 and 2 tokens).
    admin = Client(url)
    assert admin.http.post("/auth/login", json=make_admin(backend)).status_code == 200
    [usage] = [
        u for u in admin.http.get("/admin/usage").json()["data"] if u["email"] == me["email"]
    ]
    assert (usage["generations"], usage["completion_tokens"]) == (1, 6)
    assert usage["prompt_tokens"] > 0
    admin.close()

    # The next turn's prompt shows the model its call and the result.
    engine.prompts.clear()
    follow_up = client.send(conversation["id"], "Thanks!")
    assert follow_up[-1].event == "done"
    assert follow_up[0].data["parent_id"] == answer["id"]
    # The random model may answer "Thanks!" with a call of its own (the call grammar makes any
    # call it opens a valid one), so its turn can take more than one generation: the first
    # is the one that reads the history.
    prompt = engine.prompts[0]
    assert prompt.index("6*7") < prompt.index("42") < prompt.index("The answer is 42.")
    assert prompt.index("The answer is 42.") < prompt.index("Thanks!")
    client.close()


def test_stop_after_a_tool_ends_the_next_message(
    tools_server: tuple[str, ScriptedToolEngine, Backend],
) -> None:
    url, _, _ = tools_server
    client = Client(url)
    client.signup()
    conversation = client.new_conversation()
    path = f"/conversations/{conversation['id']}/messages"
    seen: list[SSEEvent] = []
    # Read until the answer after the tool's result has begun, then leave.
    with client.http.stream("POST", path, json={"content": f"{CALC}{HOLD} 6*7?"}) as r:
        for e in parse_sse(r.iter_lines()):
            seen.append(e)
            if e.event == "delta" and [x.event for x in seen].count("message") == 3:
                break
    stopped = client.http.post(f"/conversations/{conversation['id']}/stop")
    assert stopped.json() == {"stopping": True}
    rest = client.events(
        "GET",
        f"/conversations/{conversation['id']}/stream",
        headers={"Last-Event-ID": seen[-1].id},
    )
    assert rest[-1].event == "done"
    answer = rest[-1].data["message"]
    assert answer["status"] == "stopped" and answer["content"] == "The answer "
    path_now = client.http.get(f"/conversations/{conversation['id']}").json()["messages"]
    assert [(m["role"], m["status"]) for m in path_now] == [
        ("user", "complete"),
        ("assistant", "complete"),  # the call: complete before the tool ran
        ("tool", "complete"),
        ("assistant", "stopped"),
    ]
    # Nothing is left running: the conversation takes the next question.
    assert client.send(conversation["id"], "Again")[-1].event == "done"
    client.close()


def test_a_liked_answer_that_used_a_tool_exports_with_its_tool_steps(
    tools_server: tuple[str, ScriptedToolEngine, Backend], tools_model_dir: Path
) -> None:
    """SFT data from a liked tool answer keeps the call and the result (without them a model
    would learn to state a result it never computed) and the tools list the prompt showed;
    `fireside train sft` reads it, learning the call and the answer."""
    url, _, backend = tools_server
    client = Client(url)
    client.signup()
    assert client.http.patch("/settings", json={"training_consent": True}).status_code == 200
    conversation = client.new_conversation()
    events = client.send(conversation["id"], f"{CALC} What is 6 times 7?")
    answer = events[-1].data["message"]
    r = client.http.post(f"/messages/{answer['id']}/feedback", json={"rating": "up"})
    assert r.status_code == 200, r.text
    admin = Client(url)
    assert admin.http.post("/auth/login", json=make_admin(backend)).status_code == 200
    exported = admin.http.get("/admin/feedback/export", params={"format": "sft"})
    assert exported.status_code == 200, exported.text
    lines = [json.loads(line) for line in exported.text.splitlines()]
    [line] = [x for x in lines if x["messages"][-1]["content"] == "The answer is 42."]
    roles = [m["role"] for m in line["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = line["messages"][1]["tool_calls"][0]
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "6*7"}
    assert line["messages"][2]["content"] == "42"
    assert line["messages"][2]["tool_call_id"] == call["id"]
    assert [t["function"]["name"] for t in line["tools"]] == ["calculator", "search", "python"]
    # No DPO pair is made of a tool answer (a pair compares two single messages).
    dpo = admin.http.get("/admin/feedback/export", params={"format": "dpo"}).text
    assert "6*7" not in dpo
    admin.close()
    client.close()

    data = tools_model_dir.parent / "sft.jsonl"
    data.write_text(json.dumps(line) + "\n")
    tokenizer = Tokenizer.from_dir(tools_model_dir)
    report = LengthReport()
    [chat] = load_sft_file(data, tokenizer, 4096, report)
    learned = tokenizer.decode([t for t, m in zip(chat.ids, chat.mask, strict=True) if m])
    assert "6*7" in learned and "The answer is 42." in learned
    assert "42" in tokenizer.decode(chat.ids).split("The answer")[0]  # the result is shown
