"""Built-in tools (calculator, search over the local knowledge index, sandboxed Python) and
the loop that runs a conversation through the engine with them.

    tools = builtin_tools()
    async for event in run_with_tools(engine, tokenizer, messages, tools, params):
        ...

Nothing here imports FastAPI or SQLAlchemy: the chat app and `fireside chat` both build on it.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from fireside.sandbox import Limits, unavailable_reason
from fireside.tools.base import Tool, ToolError, call_tool, tool_specs
from fireside.tools.calculator import calculator_tool
from fireside.tools.knowledge import search_tool
from fireside.tools.python import python_tool

__all__ = ["Tool", "ToolError", "builtin_tools", "call_tool", "tool_specs"]

BUILTIN_TOOL_NAMES = ("calculator", "search", "python")
log = logging.getLogger(__name__)


def builtin_tools(
    knowledge_db: Path | None = None,
    sandbox_limits: Limits | None = None,
    names: tuple[str, ...] = BUILTIN_TOOL_NAMES,
) -> list[Tool]:
    """The built-in tools, always in the same order (training data renders them so, and a
    model sees the same tool list in the same place at inference). `python` is left out where
    no sandbox can be made here (`python_tool_off_reason`): it never runs without one."""
    made = {
        "calculator": calculator_tool,
        "search": lambda: search_tool(knowledge_db),
        "python": lambda: python_tool(sandbox_limits),
    }
    unknown = set(names) - set(made)
    if unknown:
        raise ToolError(f"no built-in tool named {', '.join(sorted(unknown))}")
    if "python" in names and python_tool_off_reason() is not None:
        names = tuple(n for n in names if n != "python")
    return [made[name]() for name in BUILTIN_TOOL_NAMES if name in names]


@functools.cache  # one probe and one warning per process, however many tool lists are built
def python_tool_off_reason() -> str | None:
    """Why the `python` tool is off in this process, or None when it is on."""
    reason = unavailable_reason()
    if reason is not None:
        log.warning("the python tool is off: %s", reason)
    return reason
