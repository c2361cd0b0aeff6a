"""The model `make serve` serves without --model: it answers through the OpenAI API, says who it
is, and through the tool loop calls the calculator for arithmetic and states the result."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from openai import OpenAI

from fireside.engine import Engine, SamplingParams
from fireside.model import load_pretrained
from fireside.model.pretrained import default_model_dir, uses_tools
from fireside.tools import builtin_tools
from fireside.tools.loop import Done, ToolCallEvent, ToolResultEvent, final_text, run_with_tools
from tests.api_utils import run_server

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_bundled_model_answers_through_chat_completions() -> None:
    with run_server(default_model_dir(), name="fireside-tiny") as server:
        client = OpenAI(base_url=server.base_url, api_key="unused")
        reply = client.chat.completions.create(
            model="fireside-tiny",
            messages=[{"role": "user", "content": "Who are you?"}],
            max_tokens=24,
            temperature=0,
        )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert "Fireside" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 24


def test_the_bundled_model_calculates_through_the_tool_loop(tmp_path: Path) -> None:
    bundle = load_pretrained(default_model_dir())
    assert uses_tools(bundle.generation_config), "the bundled model is marked as using tools"
    tools = builtin_tools(tmp_path / "unused-index.db", names=("calculator",))

    async def ask() -> tuple[list[str], str, Done]:
        seen: list[str] = []
        done: Done | None = None
        async with Engine.from_pretrained(bundle) as engine:
            messages = [{"role": "user", "content": "What is 1234 * 56?"}]
            params = SamplingParams(max_tokens=64, temperature=0.0)
            async for event in run_with_tools(engine, bundle.tokenizer, messages, tools, params):
                if isinstance(event, ToolCallEvent):
                    seen.append(event.name)
                elif isinstance(event, ToolResultEvent):
                    seen.append(event.content)
                elif isinstance(event, Done):
                    done = event
        assert done is not None
        return seen, final_text(done.messages), done

    seen, answer, _ = asyncio.run(ask())
    assert seen[:2] == ["calculator", "69104"]
    assert "69104" in answer.replace(",", "")


def test_the_bundled_model_writes_no_special_token_text_without_tools() -> None:
    # Asked without tools (the chat eval, HumanEval's chat protocol) the round-two model wrote
    # `<|tool_call|>` markup in 16 of 22 chat-eval answers; the markers are now never sampled
    # where no tool is offered, and no other special token's text may show either.
    from fireside.eval.chat_eval import run_chat_eval
    from fireside.eval.special_tokens import count_special

    bundle = load_pretrained(default_model_dir())
    result = run_chat_eval(bundle, max_new_tokens=48)
    answers = [a.reply for a in result.answers]
    assert len(answers) == 22 and any(answers)
    counted = count_special(answers, bundle.tokenizer.special_token_texts())
    assert counted.with_special == 0, counted.example
