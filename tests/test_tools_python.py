"""The `python` tool: what the model reads back from the sandbox, in its fixed format."""

from __future__ import annotations

import asyncio

from fireside.eval.sandbox import Limits
from fireside.tools.base import call_tool
from fireside.tools.python import PART_CHARS, python_tool

FAST = Limits(timeout_s=5.0, cpu_s=5, memory_bytes=512 << 20)


def run(code: str, limits: Limits = FAST) -> tuple[str, bool]:
    return asyncio.run(call_tool(python_tool(limits), {"code": code}))


def test_stdout_then_the_exit_status() -> None:
    assert run("print(sum(range(10)))") == ("45\nexit status: 0", False)
    assert run("pass") == ("exit status: 0", False)


def test_stderr_and_a_failing_status() -> None:
    text, failed = run("print('partial')\nraise ValueError('bad input')")
    assert not failed  # the tool worked; the program failed, and the model reads why
    lines = text.splitlines()
    assert lines[0] == "partial"
    assert lines[1] == "stderr:"
    assert "ValueError: bad input" in lines[-2]
    assert lines[-1] == "exit status: 1"


def test_long_output_keeps_its_end() -> None:
    text, _ = run("for i in range(5000):\n    print(i)")
    assert text.startswith("[…]") and text.endswith("4999\nexit status: 0")
    assert len(text) <= PART_CHARS + 50


def test_a_program_past_its_time_is_killed() -> None:
    text, _ = run("import time\ntime.sleep(60)", Limits(timeout_s=1.0))
    assert text == "exit status: killed (time limit of 1 s)"
