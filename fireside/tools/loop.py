"""The tool loop: a conversation runs through the engine, and the model's tool calls run.

    async for event in run_with_tools(engine, tokenizer, messages, tools, params):
        if isinstance(event, TextDelta): print(event.text, end="")

Each step renders the conversation with the chat template (tools listed), generates, and
reads the model's calls in its own format (`fireside.model.tool_calls`). When there are calls,
the assistant's message with its `tool_calls` and one `tool` message per result are appended,
and the model goes on; a reply without calls ends the loop.

Every generation with tools on runs under a grammar: free text, then calls, each one
`{"name": <an offered tool>, "arguments": <its schema>}` between the format's markers, so a
babbling model still writes calls that parse. A call cut off anyway (max_tokens inside it) is a
failed step, an `error: …` result the model and the user both see, never markup in the text. `max_steps` bounds the number of
generations, so a model that calls tools forever stops (finish reason "max_steps").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fireside.engine.grammar import GrammarFactory, grammar_tokenizer, lark_grammar
from fireside.engine.types import (
    EngineClient,
    PromptTooLongError,
    SamplingParams,
    TokenConstraint,
)
from fireside.model.tokenizer import Tokenizer
from fireside.model.tool_calls import ToolCall, ToolCallStreamParser, tool_call_lark, tool_format
from fireside.tools.base import Tool, call_tool, tool_specs

FinishReason = Literal["stop", "length", "max_steps", "abort", "error"]
TURN_STARTS = ("<|user|>", "<|tool|>", "<|system|>", "<|assistant|>")


@dataclass(frozen=True)
class TextDelta:
    text: str  # answer text as it streams (tool-call markup held back and removed)
    step: int


@dataclass(frozen=True)
class ToolCallEvent:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    step: int


@dataclass(frozen=True)
class ToolResultEvent:
    id: str  # the call's id
    name: str
    content: str  # what the model reads
    error: bool  # the tool refused or failed (content starts with "error: ")
    step: int


@dataclass(frozen=True)
class Done:
    messages: list[dict[str, Any]]  # the whole conversation, the new turns appended
    finish_reason: FinishReason
    steps: int  # generations run


LoopEvent = TextDelta | ToolCallEvent | ToolResultEvent | Done


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except json.JSONDecodeError:
        return call.arguments  # not an object: the tool answers with an error the model reads


def _assistant_message(content: str, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": _arguments(c)},
            }
            for c in calls
        ]
    return message


async def run_tool_call(call: ToolCall, tools: Mapping[str, Tool]) -> tuple[str, bool]:
    if call.error is not None:
        return f"error: {call.error}", True
    tool = tools.get(call.name)
    if tool is None:
        return f"error: there is no tool named {call.name!r}", True
    return await call_tool(tool, _arguments(call))


@dataclass
class _Turn:
    """What one generation produced, filled in while its text streams."""

    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    reason: FinishReason = "stop"


async def _generate(
    engine: EngineClient,
    prompt: list[int],
    params: SamplingParams,
    request_id: str,
    parser: ToolCallStreamParser | None,
    turn: _Turn,
) -> AsyncIterator[str]:
    """One engine request; yields the answer's text (call markup held back), fills `turn`."""
    async for out in engine.generate(prompt, params, request_id):
        for sample in out.samples:
            text, calls = parser.feed(sample.text) if parser else (sample.text, [])
            if sample.finish_reason is not None:
                turn.reason = sample.finish_reason
                if parser is not None:
                    more, late = parser.finish()
                    text, calls = text + more, calls + late
            turn.calls += calls
            if text:
                turn.content += text
                yield text


def _loop_params(
    params: SamplingParams, tokenizer: Tokenizer, tools: Sequence[Tool]
) -> SamplingParams:
    params = replace(params, n=1)
    markers = tool_format(tokenizer).marker_ids(tokenizer)
    if not tools:  # no call can be answered: the markers are never sampled
        return replace(params, banned_token_ids=[*params.banned_token_ids, *markers])
    # The call markers are special tokens: keep them in the text to parse them, and no other
    # one. End the turn where the model starts another role's (a tool's result, the user's
    # next message).
    others = [tokenizer.token_id(t) for t in TURN_STARTS]
    stops = [*params.stop_token_ids, *(i for i in others if i is not None)]
    params = replace(
        params, skip_special_tokens=True, keep_special_token_ids=markers, stop_token_ids=stops
    )
    if params.constraint_factory is not None:
        return params  # the caller's own constraint
    return replace(params, constraint_factory=call_constraint(tokenizer, tools, stops))


def call_constraint(
    tokenizer: Tokenizer, tools: Sequence[Tool], stops: Sequence[int]
) -> Callable[[], TokenConstraint]:
    """Text, then calls of the offered tools only. The turn may end (the tokenizer's end token
    or a stop token) wherever the grammar is satisfied: not inside a call."""
    # A tool refuses arguments its schema does not list (Tool.check_arguments): so does this.
    pairs = [(t.name, {"additionalProperties": False, **t.parameters}) for t in tools]
    specials = tokenizer.special_token_texts()  # not in the text, even spelled out
    fmt = tool_format(tokenizer)
    grammar = lark_grammar(tool_call_lark(pairs, fmt, text=True, many=True, forbidden=specials))
    ends = [*stops, *([tokenizer.eos_id] if tokenizer.eos_id is not None else [])]
    vocabulary = grammar_tokenizer(tokenizer, ends)
    return GrammarFactory(vocabulary, grammar)


async def run_with_tools(
    engine: EngineClient,
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Tool],
    params: SamplingParams,
    *,
    max_steps: int = 5,
    request_id: str | None = None,
) -> AsyncIterator[LoopEvent]:
    """Run the conversation to the model's answer, calling tools on the way. `params` applies
    to each generation; its max_tokens is cut to the room left in the context. Raises
    PromptTooLongError when the conversation does not fit to begin with; when tool results
    fill the context later, ends with finish reason "length"."""
    conversation = [dict(m) for m in messages]
    by_name = {t.name: t for t in tools}
    specs = tool_specs(tools) if tools else None
    fmt = tool_format(tokenizer)
    base_id = request_id or f"tools-{uuid.uuid4().hex}"
    params = _loop_params(params, tokenizer, tools)
    for step in range(max_steps):
        prompt = tokenizer.render_chat(conversation, add_generation_prompt=True, tools=specs).ids
        room = engine.context_length - len(prompt)
        if room < 1:
            if step == 0:
                raise PromptTooLongError(
                    f"the conversation ({len(prompt)} tokens) fills the model's context "
                    f"({engine.context_length})"
                )
            yield Done(conversation, "length", step)
            return
        turn = _Turn()
        step_params = replace(params, max_tokens=min(params.max_tokens, room))
        parser = ToolCallStreamParser(fmt, broken_as_text=False) if tools else None
        async for text in _generate(engine, prompt, step_params, f"{base_id}-{step}", parser, turn):
            yield TextDelta(text, step)
        conversation.append(_assistant_message(turn.content, turn.calls))
        # A call cut by max_tokens is still a step: it fails, and the model reads why.
        if not turn.calls or turn.reason not in ("stop", "length"):
            yield Done(conversation, turn.reason, step + 1)
            return
        if step + 1 == max_steps:
            break  # the model asked for tools once more than it may: the calls are not run
        for call in turn.calls:
            yield ToolCallEvent(call.id, call.name, call.arguments, step)
            result, failed = await run_tool_call(call, by_name)
            yield ToolResultEvent(call.id, call.name, result, failed, step)
            conversation.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}
            )
    yield Done(conversation, "max_steps", max_steps)


def final_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The last assistant message's text: the answer a one-shot caller prints."""
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return str(m.get("content") or "")
    return ""
