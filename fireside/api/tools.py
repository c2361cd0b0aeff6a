"""Tool calls: messages into the chat template, the model's calls back out, streamed too.

The call format and its parser are the model's (`fireside.model.tool_calls`); here they meet
the API's shapes, and `tool_choice` ("auto", "required" or a named function) becomes a
grammar in that same format, so the model is steered without leaving its own chat format.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from fireside.api.guided import lark_grammar
from fireside.api.schemas import (
    ChatMessageIn,
    FunctionCallOut,
    NamedToolChoice,
    Tool,
    ToolCallOut,
)
from fireside.model import tool_calls
from fireside.model.tool_calls import FIRESIDE as FIRESIDE
from fireside.model.tool_calls import HERMES as HERMES
from fireside.model.tool_calls import ToolCall, ToolFormat, tool_call_lark
from fireside.model.tool_calls import tool_format as tool_format


def template_messages(messages: list[ChatMessageIn]) -> list[dict[str, Any]]:
    """Request messages as chat templates expect them (HF conventions)."""
    out = []
    for m in messages:
        d = m.model_dump(exclude_none=True)
        if d["role"] == "developer":  # OpenAI's newer name for the system prompt
            d["role"] = "system"
        for call in d.get("tool_calls", []):
            # Templates (Llama 3's, Qwen's) want arguments as an object; OpenAI sends a string.
            args = call["function"].get("arguments")
            if isinstance(args, str):
                with contextlib.suppress(json.JSONDecodeError):
                    call["function"]["arguments"] = json.loads(args)
        out.append(d)
    return out


def template_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    return [t.model_dump(exclude_none=True) for t in tools]


def tool_call_grammar(
    tools: list[Tool],
    choice: str | NamedToolChoice,
    fmt: ToolFormat,
    parallel: bool,
    forbidden: Sequence[str] = (),
) -> str:
    """A grammar for "required" (one or more calls), a named function (exactly one) or "auto"
    (text, then any calls: a call the model opens is always whole and valid)."""
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
        parallel = False
    pairs = [(t.function.name, t.function.parameters) for t in tools]
    auto = choice == "auto"
    return lark_grammar(tool_call_lark(pairs, fmt, text=auto, many=parallel, forbidden=forbidden))


def _out(calls: list[ToolCall]) -> list[ToolCallOut]:
    """The calls that were read; one that was not (cut off, say) is no call to hand a client."""
    return [
        ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
        for c in calls
        if c.error is None
    ]


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[ToolCallOut]]:
    """Whole output → (content, calls), as `model.tool_calls.parse_tool_calls` reads them."""
    content, calls = tool_calls.parse_tool_calls(text, fmt)
    return content, _out(calls)


class ToolCallStreamParser:
    """The model's streamed call parser, with calls in the API's response shape."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.parser = tool_calls.ToolCallStreamParser(fmt)

    def feed(self, text: str) -> tuple[str, list[ToolCallOut]]:
        content, calls = self.parser.feed(text)
        return content, _out(calls)

    def finish(self) -> tuple[str, list[ToolCallOut]]:
        content, calls = self.parser.finish()
        return content, _out(calls)
