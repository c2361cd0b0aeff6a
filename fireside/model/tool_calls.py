"""The model's tool calls read out of its text, whole or streamed.

Fireside's template writes a call as `<|tool_call|>{"name": …, "arguments": {…}}<|/tool_call|>`;
Hermes/Qwen-style templates write `<tool_call>\\n{…}\\n</tool_call>`. This is part of the chat
format, so it lives beside the tokenizer: the API and the tool loop both read calls with it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fireside.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class ToolFormat:
    start: str
    end: str
    special: bool  # the markers are special tokens (kept in the text only if asked for)

    def lark_marker(self, marker: str) -> str:
        return marker if self.special else json.dumps(marker)

    def marker_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The special tokens to keep in decoded text so calls can be read (none when the
        markers are plain text, which decoding keeps anyway)."""
        if not self.special:
            return []
        ids = (tokenizer.token_id(self.start), tokenizer.token_id(self.end))
        return [i for i in ids if i is not None]


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
    # Why the call could not be read (cut off, not JSON); then `arguments` is "{}" and `name`
    # whatever could be made out of the text.
    error: str | None = None


# Calls as the chat template writes them: compact JSON, one space after ':' and ','.
_JSON_STYLE = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def _call_schema(name: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": name},
            "arguments": dict(parameters or {"type": "object"}),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_call_lark(
    tools: Sequence[tuple[str, Mapping[str, Any] | None]],
    fmt: ToolFormat,
    *,
    text: bool,
    many: bool,
    forbidden: Sequence[str] = (),
) -> str:
    """A Lark grammar (llguidance's dialect) for calls in the model's own format, each one
    `{"name": <a tool>, "arguments": <that tool's parameters schema>}`, from (name, parameters)
    pairs. `text`: free text may come first, and the calls are optional (tool_choice "auto");
    otherwise the output is calls alone. `many`: more than one call. `forbidden`: strings the
    free text never contains (the special tokens' texts, spelled out of ordinary tokens).

    No special token matches inside text (llguidance's regexes match none), so the text runs
    until the start marker; a plain-text marker (Hermes) is kept out of the text, so every
    marker the model writes opens a real call."""
    schemas = [_call_schema(name, params) for name, params in tools]
    schema: dict[str, Any] = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    schema["x-guidance"] = _JSON_STYLE
    start, end = fmt.lark_marker(fmt.start), fmt.lark_marker(fmt.end)
    sep = "" if fmt.special else r' "\n"'
    rules = [
        f"call: {start}{sep} body{sep} {end}",
        f"body: %json {json.dumps(schema)}",
    ]
    if not text:
        return "\n".join([f"start: call{'+' if many else ''}", *rules]) + "\n"
    more = "call*" if many else ""
    banned = sorted({*forbidden, *([] if fmt.special else [fmt.start])})
    outside = "".join(rf" & ~/(.|\n)*{_regex(s)}(.|\n)*/" for s in banned)
    rules.append(rf"TEXT: /(.|\n)+/{outside}")
    if fmt.special:
        head = f"start: TEXT? call{'*' if many else '?'}"
    else:
        # The text and the marker as one lazy match: it ends at the first marker.
        others = "".join(rf" & ~/(.|\n)*{_regex(s)}(.|\n)*/" for s in banned if s != fmt.start)
        head = f"start: TEXT? | opened{sep} body{sep} {end} {more}"
        rules.append(rf"opened[lazy]: /(.|\n)*{_regex(fmt.start)}/{others}")
    return "\n".join([head, *rules]) + "\n"


def _regex(literal: str) -> str:
    return re.escape(literal).replace("/", "\\/")


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


def _broken_call(body: str, cut: bool) -> ToolCall:
    named = re.search(r'"name"\s*:\s*"([^"\\]*)"', body)
    why = "the call was cut off before its end" if cut else "the call is not valid JSON"
    return ToolCall(new_call_id(), named.group(1) if named else "", "{}", error=why)


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[ToolCall]]:
    """Whole output → (content, calls). A call that does not parse stays in the content when
    the markers are plain text (they may be prose); special-token markup never does."""
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
    may be the start of a call marker until it is known not to be one.

    A call that does not parse is content again when `broken_as_text` (by default when the
    markers are plain text), else a call with its `error` set: the tool loop reports it as a
    failed step, and the model's markup never reaches the user."""

    def __init__(self, fmt: ToolFormat, broken_as_text: bool | None = None) -> None:
        self.fmt = fmt
        self.broken_as_text = not fmt.special if broken_as_text is None else broken_as_text
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
            if call is not None:
                calls.append(call)
            elif self.broken_as_text:
                content += self.fmt.start + body + self.fmt.end
            else:
                calls.append(_broken_call(body, cut=False))

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The end of the output: an unterminated call is parsed if its JSON is whole."""
        rest, self.buffer = self.buffer, ""
        if not self.inside:
            return rest, []
        self.inside = False
        call = _parse_call(rest.strip())
        if call is not None:
            return "", [call]
        if self.broken_as_text:
            return self.fmt.start + rest, []
        return "", [_broken_call(rest, cut=True)]


def _partial_suffix(text: str, marker: str) -> int:
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
