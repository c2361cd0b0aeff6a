"""Built-in tools (calculator, search over the local knowledge index, sandboxed Python) and
the loop that runs a conversation through the engine with them.

    tools = builtin_tools()
    async for event in run_with_tools(engine, tokenizer, messages, tools, params):
        ...

Nothing here imports FastAPI or SQLAlchemy: the chat app and `fireside chat` both build on it.
"""

from __future__ import annotations

from pathlib import Path

from fireside.eval.sandbox import Limits
from fireside.tools.base import Tool, ToolError, call_tool, tool_specs
from fireside.tools.calculator import calculator_tool
from fireside.tools.knowledge import search_tool
from fireside.tools.python import python_tool

__all__ = ["Tool", "ToolError", "builtin_tools", "call_tool", "tool_specs"]

BUILTIN_TOOL_NAMES = ("calculator", "search", "python")


def builtin_tools(
    knowledge_db: Path | None = None,
    sandbox_limits: Limits | None = None,
    names: tuple[str, ...] = BUILTIN_TOOL_NAMES,
) -> list[Tool]:
    """The built-in tools, always in the same order (training data renders them so, and a
    model sees the same tool list in the same place at inference)."""
    made = {
        "calculator": calculator_tool,
        "search": lambda: search_tool(knowledge_db),
        "python": lambda: python_tool(sandbox_limits),
    }
    unknown = set(names) - set(made)
    if unknown:
        raise ToolError(f"no built-in tool named {', '.join(sorted(unknown))}")
    return [made[name]() for name in BUILTIN_TOOL_NAMES if name in names]
