"""The model's tool calls read out of its text, whole or streamed.

Fireside's template writes a call as `<|tool_call|>{"name": …, "arguments": {…}}<|/tool_call|>`;
Hermes/Qwen-style templates write `<tool_call>\\n{…}\\n</tool_call>`. This is part of the chat
format, so it lives beside the tokenizer: the API and the tool loop both read calls with it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI's API carries it


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _parse_call(body: str) -> ToolCall | None:
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    args = data.get("arguments", data.get("parameters", {}))
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return ToolCall(id=new_call_id(), name=data["name"], arguments=arguments)


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[ToolCall]]:
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

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self.buffer += text
        content, calls = "", list[ToolCall]()
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
                calls.append(call)

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The end of the output: an unterminated call is parsed if its JSON is whole."""
        rest, self.buffer = self.buffer, ""
        if not self.inside:
            return rest, []
        self.inside = False
        call = _parse_call(rest.strip())
        if call is None:
            return self.fmt.start + rest, []
        return "", [call]


def _partial_suffix(text: str, marker: str) -> int:
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
