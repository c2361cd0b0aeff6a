"""Tool calls: messages into the chat template, the model's calls back out, streamed too.

The call format and its parser are the model's (`fireside.model.tool_calls`); here they meet
the API's shapes, and `tool_choice` "required" or a named function becomes a
grammar in that same format, so the model is steered without leaving its own chat format.
"""

from __future__ import annotations

import contextlib
import json
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
from fireside.model.tool_calls import ToolCall, ToolFormat
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


def _call_schema(tool: Tool) -> dict[str, Any]:
    params = tool.function.parameters or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_grammar(
    tools: list[Tool], choice: str | NamedToolChoice, fmt: ToolFormat, parallel: bool
) -> str:
    """A grammar for "required" (one or more calls) or a named function (exactly one)."""
    if isinstance(choice, NamedToolChoice):
        chosen = [t for t in tools if t.function.name == choice.function.name]
        parallel = False
    else:
        chosen = tools
    schemas = [_call_schema(t) for t in chosen]
    schema: dict[str, Any] = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    schema["x-guidance"] = {
        "whitespace_flexible": False,
        "key_separator": ": ",
        "item_separator": ", ",
    }
    sep = "" if fmt.special else r' "\n"'
    lark = (
        f"start: call{'+' if parallel else ''}\n"
        f"call: {fmt.lark_marker(fmt.start)}{sep} body{sep} {fmt.lark_marker(fmt.end)}\n"
        f"body: %json {json.dumps(schema)}\n"
    )
    return lark_grammar(lark)


def _out(call: ToolCall) -> ToolCallOut:
    return ToolCallOut(
        id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments)
    )


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[ToolCallOut]]:
    """Whole output → (content, calls). A call that does not parse stays in the content."""
    content, calls = tool_calls.parse_tool_calls(text, fmt)
    return content, [_out(c) for c in calls]


class ToolCallStreamParser:
    """The model's streamed call parser, with calls in the API's response shape."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.parser = tool_calls.ToolCallStreamParser(fmt)

    def feed(self, text: str) -> tuple[str, list[ToolCallOut]]:
        content, calls = self.parser.feed(text)
        return content, [_out(c) for c in calls]

    def finish(self) -> tuple[str, list[ToolCallOut]]:
        content, calls = self.parser.finish()
        return content, [_out(c) for c in calls]
