"""Tool calls: messages into the chat template, the model's calls back out, streamed too.

Fireside's template writes a call as `<|tool_call|>{"name": …, "arguments": {…}}<|/tool_call|>`;
Hermes/Qwen-style templates write `<tool_call>\\n{…}\\n</tool_call>`. The format is read from
the tokenizer and template, and `tool_choice` "required" or a named function becomes a
grammar in that same format, so the model is steered without leaving its own chat format.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from fireside.api.guided import lark_grammar
from fireside.api.schemas import (
    ChatMessageIn,
    FunctionCallOut,
    NamedToolChoice,
    Tool,
    ToolCallOut,
)
from fireside.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class ToolFormat:
    start: str
    end: str
    special: bool  # the markers are special tokens (kept in the text only if asked for)

    def lark_marker(self, marker: str) -> str:
        return marker if self.special else json.dumps(marker)


FIRESIDE = ToolFormat("<|tool_call|>", "<|/tool_call|>", special=True)
HERMES = ToolFormat("<tool_call>", "</tool_call>", special=False)


def tool_format(tokenizer: Tokenizer) -> ToolFormat:
    if tokenizer.token_id(FIRESIDE.start) is not None and tokenizer.token_id(FIRESIDE.end):
        return FIRESIDE
    return HERMES


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


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _parse_call(body: str) -> FunctionCallOut | None:
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    args = data.get("arguments", data.get("parameters", {}))
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return FunctionCallOut(name=data["name"], arguments=arguments)


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[ToolCallOut]]:
    """Whole output → (content, calls). A call that does not parse stays in the content."""
    parser = ToolCallStreamParser(fmt)
    content, calls = parser.feed(text)
    more, late = parser.finish()
    content += more
    calls += late
    if calls and not content.strip():
        return None, calls
    return content, calls


class ToolCallStreamParser:
    """Splits streamed text into content and complete tool calls, holding back any text that
    may be the start of a call marker until it is known not to be one."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.fmt = fmt
        self.buffer = ""
        self.inside = False

    def feed(self, text: str) -> tuple[str, list[ToolCallOut]]:
        self.buffer += text
        content, calls = "", list[ToolCallOut]()
        while True:
            if not self.inside:
                at = self.buffer.find(self.fmt.start)
                if at < 0:
                    keep = _partial_suffix(self.buffer, self.fmt.start)
                    content += self.buffer[: len(self.buffer) - keep]
                    self.buffer = self.buffer[len(self.buffer) - keep :]
                    return content, calls
                content += self.buffer[:at]
                self.buffer = self.buffer[at + len(self.fmt.start) :]
                self.inside = True
            at = self.buffer.find(self.fmt.end)
            if at < 0:
                return content, calls
            body = self.buffer[:at]
            self.buffer = self.buffer[at + len(self.fmt.end) :]
            self.inside = False
            call = _parse_call(body.strip())
            if call is None:
                content += self.fmt.start + body + self.fmt.end
            else:
                calls.append(ToolCallOut(id=new_call_id(), function=call))

    def finish(self) -> tuple[str, list[ToolCallOut]]:
        """The end of the output: an unterminated call is parsed if its JSON is whole."""
        rest, self.buffer = self.buffer, ""
        if not self.inside:
            return rest, []
        self.inside = False
        call = _parse_call(rest.strip())
        if call is None:
            return self.fmt.start + rest, []
        return "", [ToolCallOut(id=new_call_id(), function=call)]


def _partial_suffix(text: str, marker: str) -> int:
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
