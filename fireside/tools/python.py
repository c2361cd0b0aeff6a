"""`python`: run a short program in the sandbox and hand back what it printed.

Every limit of `fireside.sandbox` applies (CPU, memory, file size, processes, wall
clock, no network, nothing of the machine but the interpreter, a throwaway tmpfs). The model
reads:

    <stdout>
    stderr:
    <stderr>
    exit status: 0

stdout and stderr only when not empty, each cut to its last 1,500 characters when long
(`[…]` marks the cut); the last line is always `exit status: N` or `exit status: killed (…)`.
A traceback names the program `program.py` with its own line numbers.
"""

from __future__ import annotations

import signal
from typing import Any

from fireside.sandbox import Limits, SandboxResult, run_python
from fireside.tools.base import Tool

# What a chat user's program gets: half a gigabyte, five CPU seconds, ten on the clock.
TOOL_LIMITS = Limits(timeout_s=10.0, cpu_s=5, memory_bytes=512 << 20)
PART_CHARS = 1500  # of stdout, and of stderr, kept (their ends: a traceback's last line matters)


def _tail(text: str) -> str:
    text = text.rstrip("\n")
    return text if len(text) <= PART_CHARS else "[…]" + text[-PART_CHARS:]


def exit_status(result: SandboxResult, limits: Limits) -> int | str:
    """The program's exit status, or what killed it: "killed (time limit of 10 s)"."""
    code = result.returncode
    if result.status == "timeout":
        if code == -signal.SIGXCPU:
            return f"killed (CPU time limit of {limits.cpu_s} s)"
        return f"killed (time limit of {limits.timeout_s:g} s)"
    if code is not None and code < 0:
        return f"killed ({signal.Signals(-code).name})"
    return code if code is not None else "killed"


def _status(result: SandboxResult, limits: Limits) -> str:
    return f"exit status: {exit_status(result, limits)}"


def format_result(result: SandboxResult, limits: Limits) -> str:
    parts = []
    if result.stdout.strip():
        parts.append(_tail(result.stdout))
    if result.stderr.strip():
        parts.append("stderr:\n" + _tail(result.stderr))
    parts.append(_status(result, limits))
    return "\n".join(parts)


def python_tool(limits: Limits | None = None) -> Tool:
    limits = limits or TOOL_LIMITS

    def run(arguments: dict[str, Any]) -> str:
        return format_result(run_python(arguments["code"], limits), limits)

    return Tool(
        name="python",
        description="Run a Python program and see what it prints (no network, no files kept).",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
        run=run,
        timeout_s=limits.timeout_s + 5,  # the sandbox's own clock ends it first
        max_chars=2 * PART_CHARS + 200,
    )
