"""Tool calls under a grammar: a random model, sampled at temperature 1 and pushed to open
calls, still writes only calls that name an offered tool with arguments its schema accepts; a
call cut by max_tokens is a failed step; no special-token text reaches the user."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import pytest

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.engine.grammar import grammar_tokenizer, lark_grammar
from fireside.model import Tokenizer
from fireside.model.pretrained import Pretrained, load_pretrained
from fireside.model.tool_calls import FIRESIDE, HERMES, parse_tool_calls, tool_call_lark
from fireside.tools.base import Tool
from fireside.tools.loop import (
    Done,
    LoopEvent,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    run_with_tools,
)

SWITCH = {
    "type": "object",
    "properties": {"room": {"enum": ["hall", "den"]}, "on": {"type": "boolean"}},
    "required": ["room", "on"],
    "additionalProperties": False,
}
LEVEL = {
    "type": "object",
    "properties": {"level": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["level"],
    "additionalProperties": False,
}
NOTE = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 3}},
    "required": ["text"],
    "additionalProperties": False,
}
SCHEMAS = {"switch": SWITCH, "level": LEVEL, "note": NOTE}
TOOLS = [
    Tool(name, f"the {name} tool", schema, lambda args: "ok") for name, schema in SCHEMAS.items()
]
QUESTIONS = ["Turn on the hall light.", "What is 2 + 2?", "Write a note."]


@pytest.fixture(scope="module")
def bundle(api_model_dir: Path) -> Pretrained:
    return load_pretrained(api_model_dir)


def run_loop(bundle: Pretrained, question: str, params: SamplingParams) -> list[LoopEvent]:
    async def go() -> list[LoopEvent]:
        engine = Engine.from_pretrained(bundle, EngineConfig(max_num_seqs=1))
        async with engine:
            messages = [{"role": "user", "content": question}]
            events = run_with_tools(engine, bundle.tokenizer, messages, TOOLS, params, max_steps=2)
            return [e async for e in events]

    return asyncio.run(go())


def no_special_text(tokenizer: Tokenizer, text: str) -> bool:
    return not any(s in text for s in tokenizer.special_token_texts())


def test_babbled_calls_parse_and_fit_the_offered_schemas(
    bundle: Pretrained, one_thread: None
) -> None:
    start = bundle.tokenizer.token_id(FIRESIDE.start)
    assert start is not None
    whole = 0
    for seed in range(6):
        params = SamplingParams(max_tokens=40, temperature=1.0, seed=seed, logit_bias={start: 4.0})
        events = run_loop(bundle, QUESTIONS[seed % len(QUESTIONS)], params)
        results = {e.id: e for e in events if isinstance(e, ToolResultEvent)}
        for call in (e for e in events if isinstance(e, ToolCallEvent)):
            result = results[call.id]
            if result.content == "error: the call was cut off before its end":
                continue  # max_tokens ran out inside it: a failed step, tested below
            assert call.name in SCHEMAS, call
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
            assert (result.content, result.error) == ("ok", False)
            whole += 1
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert no_special_text(bundle.tokenizer, text), text
        done = events[-1]
        assert isinstance(done, Done)
        for message in done.messages[1:]:
            assert no_special_text(bundle.tokenizer, message["content"] or ""), message
    assert whole >= 3  # the test saw real calls, not only cut ones


def test_without_tools_the_markers_are_never_sampled(bundle: Pretrained, one_thread: None) -> None:
    # The loop offers no tool: the call markers are banned, however hard a bias pushes.
    markers = [bundle.tokenizer.token_id(FIRESIDE.start), bundle.tokenizer.token_id(FIRESIDE.end)]
    bias = {i: 100.0 for i in markers if i is not None}
    assert len(bias) == 2

    async def go(seed: int) -> list[LoopEvent]:
        engine = Engine.from_pretrained(bundle, EngineConfig(max_num_seqs=1))
        params = SamplingParams(max_tokens=24, temperature=1.0, seed=seed, logit_bias=bias)
        async with engine:
            messages = [{"role": "user", "content": QUESTIONS[seed]}]
            return [e async for e in run_with_tools(engine, bundle.tokenizer, messages, [], params)]

    for seed in range(3):
        events = asyncio.run(go(seed))
        assert not [e for e in events if isinstance(e, ToolCallEvent)]
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text and no_special_text(bundle.tokenizer, text), text


def test_a_call_cut_by_max_tokens_is_a_failed_step(bundle: Pretrained, one_thread: None) -> None:
    start = bundle.tokenizer.token_id(FIRESIDE.start)
    assert start is not None
    # The bias makes the first token open a call; four tokens cannot finish it.
    params = SamplingParams(max_tokens=4, temperature=0, logit_bias={start: 100.0})
    events = run_loop(bundle, "Turn on the hall light.", params)
    call, result = events[0], events[1]
    assert isinstance(call, ToolCallEvent) and isinstance(result, ToolResultEvent)
    assert call.arguments == "{}" and result.error
    assert result.content == "error: the call was cut off before its end"
    assert not any(isinstance(e, TextDelta) and FIRESIDE.start in e.text for e in events), (
        "the call's markup reached the user"
    )
    done = events[-1]
    assert isinstance(done, Done) and done.steps == 2
    assert done.messages[1]["tool_calls"][0]["id"] == call.id
    assert done.messages[2] == {
        "role": "tool",
        "tool_call_id": call.id,
        "name": call.name,
        "content": result.content,
    }


def test_a_broken_call_is_never_content_when_its_markers_are_special_tokens() -> None:
    content, calls = parse_tool_calls(
        'Hi <|tool_call|>{"name": "search", "arguments": {"q', FIRESIDE
    )
    assert content == "Hi " and calls[0].name == "search" and calls[0].error is not None
    content, calls = parse_tool_calls("<tool_call>{not json}</tool_call>", HERMES)
    assert content == "<tool_call>{not json}</tool_call>" and calls == []  # plain text, as written


def walk(grammar: str, vocabulary: llguidance.LLTokenizer, ids: list[int]) -> bool:
    matcher = llguidance.LLMatcher(vocabulary, grammar, log_level=0)
    return all(matcher.consume_token(i) for i in ids) and not matcher.is_error()


@pytest.mark.parametrize("fmt", [FIRESIDE, HERMES])
def test_the_auto_grammar_takes_text_then_calls_and_nothing_else(
    tokenizer: Tokenizer, fmt: Any
) -> None:
    lark = tool_call_lark([("switch", SWITCH)], fmt, text=True, many=True, forbidden=["<|user|>"])
    grammar = lark_grammar(lark)
    vocabulary = grammar_tokenizer(tokenizer, [tokenizer.eos_id or 0])
    sep = "" if fmt.special else "\n"
    body = json.dumps({"name": "switch", "arguments": {"room": "den", "on": True}})
    call = f"{fmt.start}{sep}{body}{sep}{fmt.end}"

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text)

    assert walk(grammar, vocabulary, ids("Just text, no call."))
    assert walk(grammar, vocabulary, ids("Let me look. " + call + call))
    assert not walk(grammar, vocabulary, ids("Spelled out: <|use") + ids("r|> no"))
    bad = json.dumps({"name": "switch", "arguments": {"room": "attic", "on": True}})
    assert not walk(grammar, vocabulary, ids(f"{fmt.start}{sep}{bad}"))
    unknown = json.dumps({"name": "weather", "arguments": {}})
    assert not walk(grammar, vocabulary, ids(f"{fmt.start}{sep}{unknown}"))
