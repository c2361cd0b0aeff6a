"""The tool loop: calls run, results go back as `tool` messages, the model goes on; the step
limit holds; it runs on the real engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fireside.engine import Engine, EngineConfig, RequestOutput, SamplingParams
from fireside.engine.types import EngineStats, PromptTooLongError, SampleDelta
from fireside.model import Tokenizer
from fireside.model.pretrained import load_pretrained
from fireside.tools import builtin_tools, tool_specs
from fireside.tools.calculator import calculator_tool
from fireside.tools.loop import (
    Done,
    LoopEvent,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    final_text,
    run_with_tools,
)


def call(name: str, arguments: dict[str, object]) -> str:
    return f"<|tool_call|>{json.dumps({'name': name, 'arguments': arguments})}<|/tool_call|>"


class ScriptedEngine:
    """An EngineClient whose replies are given in advance, streamed in small pieces; it
    records the prompts it was sent, so a test sees exactly what the model would have read."""

    def __init__(self, tokenizer: Tokenizer, replies: list[str], context: int = 4096) -> None:
        self.tokenizer, self.replies, self.context = tokenizer, list(replies), context
        self.prompts: list[str] = []
        self.params: list[SamplingParams] = []

    @property
    def context_length(self) -> int:
        return self.context

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        self.prompts.append(self.tokenizer.decode(prompt_token_ids))
        self.params.append(params)
        text = self.replies.pop(0)
        pieces = [text[i : i + 5] for i in range(0, len(text), 5)] or [""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            delta = SampleDelta(0, text=piece, finish_reason="stop" if last else None)
            yield RequestOutput(request_id, [delta], prompt_token_ids, finished=last)

    async def abort(self, request_id: str) -> None:
        pass

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0, 0, 0, 0)

    def is_healthy(self) -> bool:
        return True


def collect(
    engine: object, tokenizer: Tokenizer, messages: list[dict[str, object]], **kw: object
) -> list[LoopEvent]:
    async def go() -> list[LoopEvent]:
        tools = kw.pop("tools", [calculator_tool()])
        return [
            e
            async for e in run_with_tools(
                engine,  # type: ignore[arg-type]
                tokenizer,
                messages,
                tools,  # type: ignore[arg-type]
                SamplingParams(max_tokens=64, temperature=0),
                **kw,  # type: ignore[arg-type]
            )
        ]

    return asyncio.run(go())


def test_a_call_runs_and_the_model_answers_from_its_result(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(
        tokenizer, [call("calculator", {"expression": "1234 * 56"}), "It is 69104."]
    )
    question = [{"role": "user", "content": "What is 1234 * 56?"}]
    events = collect(engine, tokenizer, question)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "ToolCallEvent" and kinds[1] == "ToolResultEvent" and kinds[-1] == "Done"
    call_event, result = events[0], events[1]
    assert isinstance(call_event, ToolCallEvent) and isinstance(result, ToolResultEvent)
    assert call_event.name == "calculator"
    assert json.loads(call_event.arguments) == {"expression": "1234 * 56"}
    assert (result.id, result.content, result.error) == (call_event.id, "69104", False)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is 69104."
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.steps == 2
    assert done.messages[1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_event.id,
                    "type": "function",
                    "function": {"name": "calculator", "arguments": {"expression": "1234 * 56"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_event.id, "name": "calculator", "content": "69104"},
        {"role": "assistant", "content": "It is 69104."},
    ]
    assert final_text(done.messages) == "It is 69104."
    # The second prompt is the chat template's rendering of the call and its result, with the
    # tools listed, and the call markers are kept in the generated text to be parsed.
    assert engine.prompts[1].endswith(
        call("calculator", {"expression": "1234 * 56"}) + "<|end|><|tool|>69104<|end|><|assistant|>"
    )
    assert "Tools:\ncalculator(expression): Evaluate arithmetic" in engine.prompts[0]
    assert all(p.skip_special_tokens for p in engine.params)
    markers = [tokenizer.token_id("<|tool_call|>"), tokenizer.token_id("<|/tool_call|>")]
    assert all(p.keep_special_token_ids == markers for p in engine.params)
    assert tokenizer.token_id("<|tool|>") in engine.params[0].stop_token_ids


def test_text_before_a_call_streams_and_markers_never_do(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(
        tokenizer, ["Let me work it out. " + call("calculator", {"expression": "2+2"}), "4."]
    )
    events = collect(engine, tokenizer, [{"role": "user", "content": "2+2?"}])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Let me work it out. 4."
    done = events[-1]
    assert isinstance(done, Done) and done.messages[1]["content"] == "Let me work it out. "


def test_tool_failures_go_back_to_the_model(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(
        tokenizer,
        [
            call("calculator", {"expression": "1/0"}) + call("weather", {"city": "Oslo"}),
            '<|tool_call|>{"name": "calculator", "arguments": "2+2"}<|/tool_call|>',
            "I could not work that out.",
        ],
    )
    events = collect(engine, tokenizer, [{"role": "user", "content": "1/0?"}])
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert [(r.content, r.error) for r in results] == [
        ("error: division by zero", True),
        ("error: there is no tool named 'weather'", True),
        ("error: calculator takes a JSON object of arguments", True),
    ]
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.steps == 3


def test_the_step_limit_stops_a_model_that_never_answers(tokenizer: Tokenizer) -> None:
    looping = call("calculator", {"expression": "1+1"})
    engine = ScriptedEngine(tokenizer, [looping] * 10)
    events = collect(engine, tokenizer, [{"role": "user", "content": "?"}], max_steps=3)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "max_steps" and done.steps == 3
    assert len(engine.prompts) == 3
    assert len([e for e in events if isinstance(e, ToolResultEvent)]) == 2  # not the third


def test_no_tools_is_a_plain_reply(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer, [call("calculator", {"expression": "1"})])
    events = collect(engine, tokenizer, [{"role": "user", "content": "hi"}], tools=[])
    assert not any(isinstance(e, ToolCallEvent) for e in events)
    assert "calculator" not in engine.prompts[0]
    assert engine.params[0].skip_special_tokens


def test_a_conversation_over_the_context_is_refused(tokenizer: Tokenizer) -> None:
    engine = ScriptedEngine(tokenizer, ["x"], context=8)
    with pytest.raises(PromptTooLongError, match="fills the model's context"):
        collect(engine, tokenizer, [{"role": "user", "content": "a long question " * 10}])


def test_tool_results_that_fill_the_context_end_the_turn(tokenizer: Tokenizer) -> None:
    question = [{"role": "user", "content": "What is 1234 * 56?"}]
    specs = tool_specs([calculator_tool()])
    first = tokenizer.render_chat(question, add_generation_prompt=True, tools=specs).ids
    # Room for the first turn, none once its call and result are in the conversation.
    engine = ScriptedEngine(
        tokenizer, [call("calculator", {"expression": "1234 * 56"})], context=len(first) + 5
    )
    events = collect(engine, tokenizer, question)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "length" and done.steps == 1
    assert done.messages[-1] == {
        "role": "tool",
        "tool_call_id": done.messages[1]["tool_calls"][0]["id"],
        "name": "calculator",
        "content": "69104",
    }
    assert len(engine.prompts) == 1


def test_on_the_real_engine_the_loop_reaches_done(api_model_dir: Path, one_thread: None) -> None:
    bundle = load_pretrained(api_model_dir)
    tools = builtin_tools(knowledge_db=api_model_dir / "none.db")
    rendered = bundle.tokenizer.render_chat(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tools=tool_specs(tools)
    )
    assert "\npython(code): " in rendered.text

    async def go() -> list[LoopEvent]:
        engine = Engine.from_pretrained(bundle, EngineConfig(max_num_seqs=1))
        async with engine:
            messages = [{"role": "user", "content": "What is 2 + 2?"}]
            params = SamplingParams(max_tokens=8, temperature=0)
            return [
                e async for e in run_with_tools(engine, bundle.tokenizer, messages, tools, params)
            ]

    events = asyncio.run(go())
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason in ("stop", "length", "max_steps")
    assert done.messages[0] == {"role": "user", "content": "What is 2 + 2?"}
    assert done.messages[1]["role"] == "assistant"


def test_tools_and_the_terminal_chat_import_no_web_framework() -> None:
    code = (
        "import sys, fireside.tools, fireside.tools.loop, fireside.tools.cli, fireside.chat_cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'starlette'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
