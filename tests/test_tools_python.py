"""The `python` tool: what the model reads back from the sandbox, in its fixed format."""

from __future__ import annotations

import asyncio

from fireside.sandbox import Limits
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


def test_tracebacks_show_the_program_alone() -> None:
    text, _ = run("def f(x):\n    return 1 / x\nf(0)")
    assert text == (
        "stderr:\n"
        "Traceback (most recent call last):\n"
        '  File "program.py", line 3, in <module>\n'
        "    f(0)\n"
        '  File "program.py", line 2, in f\n'
        "    return 1 / x\n"
        "           ~~^~~\n"
        "ZeroDivisionError: division by zero\n"
        "exit status: 1"
    )
    text, _ = run("def f(:\n    pass")
    assert text.startswith('stderr:\n  File "program.py", line 1\n    def f(:')
    assert "SyntaxError" in text and "fireside-sandbox" not in text


def test_long_output_keeps_its_end() -> None:
    text, _ = run("for i in range(5000):\n    print(i)")
    assert text.startswith("[…]") and text.endswith("4999\nexit status: 0")
    assert len(text) <= PART_CHARS + 50


def test_a_program_past_its_time_is_killed() -> None:
    text, _ = run("import time\ntime.sleep(60)", Limits(timeout_s=1.0))
    assert text == "exit status: killed (time limit of 1 s)"


# Every sandbox limit, seen through the tool: what bites, and what the model reads.


def test_cpu_time_limit_bites_with_its_signal() -> None:
    text, _ = run("while True:\n    pass", Limits(timeout_s=60.0, cpu_s=1))
    assert text == "exit status: killed (CPU time limit of 1 s)"


def test_memory_limit_bites() -> None:
    text, _ = run("x = bytearray(1 << 30)\nprint('allocated')", FAST)  # 1 GiB over 512 MiB
    assert "allocated" not in text
    assert "MemoryError" in text and text.endswith("exit status: 1")


def test_file_size_limit_bites() -> None:
    limits = Limits(timeout_s=10.0, file_bytes=1 << 20)
    text, _ = run("open('big', 'wb').write(b'x' * (2 << 20))\nprint('wrote')", limits)
    assert "wrote" not in text
    assert "File too large" in text and text.endswith("exit status: 1")


def test_output_is_capped_by_the_file_limit_and_the_tool() -> None:
    limits = Limits(timeout_s=10.0, file_bytes=1 << 20)
    text, _ = run("import sys\nwhile True:\n    sys.stdout.write('y' * 4096)", limits)
    assert "File too large" in text  # stdout is a file, so the writer is stopped at 1 MiB
    assert len(text) <= python_tool(limits).max_chars


def test_process_limit_bites() -> None:
    # Processes and threads together, counted by the kernel (a cgroup, or RLIMIT_NPROC).
    program = (
        "import subprocess, time\n"
        "started = []\n"
        "try:\n"
        "    for _ in range(50):\n"
        "        started.append(subprocess.Popen(['sleep', '2']))\n"
        "except OSError as e:\n"
        "    print(len(started), e.errno)\n"
    )
    text, _ = run(program, Limits(timeout_s=20.0, processes=4))
    assert text.splitlines()[0] == "4 11"  # EAGAIN past the fourth


def test_network_is_unreachable() -> None:
    program = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)"
    text, _ = run(program)
    assert "ConnectionRefusedError" in text or "OSError" in text  # its own loopback only
    assert text.endswith("exit status: 1")


def test_files_do_not_outlive_the_run() -> None:
    first, _ = run("open('kept.txt', 'w').write('x')\nimport os\nprint(os.listdir('.'))")
    assert first == "['kept.txt']\nexit status: 0"  # its tmpfs, empty at the start
    second, _ = run("import os\nprint(os.listdir('.'))")
    assert second == "[]\nexit status: 0"
