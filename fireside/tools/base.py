"""What a tool is: a name, a JSON schema, a time limit, a cap on what it returns, and `run`.

A tool's text goes back into the model's context, so it is short and plain, and every failure
is text too (`error: …`): the model reads it and can answer or try again, and the loop never
stops on a tool's mistake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fireside.errors import FiresideError

TRUNCATED = "\n[truncated]"
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


class ToolError(FiresideError):
    """A tool could not do what it was asked; the message is what the model reads."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    run: Callable[[dict[str, Any]], str]
    timeout_s: float = 10.0
    max_chars: int = 2000
    # One-time work a first call needs (building the search index): done before the time limit
    # starts, so a fresh install's first search waits for it instead of failing.
    prepare: Callable[[], None] | None = None

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style entry of `tools=[...]`, as chat templates render it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def check_arguments(self, arguments: Any) -> dict[str, Any]:
        """The schema's shape (an object, required keys, simple types); raises ToolError."""
        if not isinstance(arguments, dict):
            raise ToolError(f"{self.name} takes a JSON object of arguments")
        properties = self.parameters.get("properties", {})
        for key in self.parameters.get("required", []):
            if key not in arguments:
                raise ToolError(f"{self.name} needs the argument {key!r}")
        for key, value in arguments.items():
            if key not in properties:
                raise ToolError(f"{self.name} has no argument {key!r}")
            expected = _JSON_TYPES.get(properties[key].get("type", ""))
            if expected is not None and (
                not isinstance(value, expected) or isinstance(value, bool) is not (expected is bool)
            ):
                raise ToolError(f"{self.name}: {key!r} must be a {properties[key]['type']}")
        return arguments


def tool_specs(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [t.spec() for t in tools]


def cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - len(TRUNCATED))] + TRUNCATED


def run_tool(tool: Tool, arguments: Any) -> tuple[str, bool]:
    """Run a tool here and now → (text for the model, failed). Training data is made with this
    too, so a model learns from exactly the text it will read at inference."""
    if tool.prepare is not None:
        tool.prepare()
    try:
        text = tool.run(tool.check_arguments(arguments))
    except ToolError as e:
        return cap(f"error: {e}", tool.max_chars), True
    return cap(text, tool.max_chars), False


async def call_tool(tool: Tool, arguments: Any) -> tuple[str, bool]:
    """`run_tool` off the event loop within the tool's time limit (its `prepare` before)."""
    if tool.prepare is not None:
        await asyncio.to_thread(tool.prepare)
    try:
        return await asyncio.wait_for(asyncio.to_thread(run_tool, tool, arguments), tool.timeout_s)
    except TimeoutError:
        # The worker thread cannot be killed; tools that might run long (python) enforce
        # their own, shorter limit, so this is the backstop.
        return f"error: {tool.name} took longer than {tool.timeout_s:g} s", True
