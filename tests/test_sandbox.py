"""The sandbox as HumanEval uses it: right code passes; wrong, endless, greedy or networked code
does not. (tests/security/test_python_sandbox.py attacks it.)"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator

import pytest

from fireside.sandbox import Limits, run_python, unavailable_reason
from fireside.sandbox.bwrap import SandboxUnavailable

FAST = Limits(timeout_s=5.0, cpu_s=5, memory_bytes=512 << 20)


def test_correct_program_passes_and_wrong_one_fails() -> None:
    good = "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')\n"
    result = run_python(good, FAST)
    assert result.passed, result.stderr
    assert result.stdout.strip() == "ok"
    bad = "def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n"
    result = run_python(bad, FAST)
    assert result.status == "failed"
    assert "AssertionError" in result.stderr


def test_infinite_loop_is_killed_by_the_timeout() -> None:
    # A sleeping loop burns no CPU, so only the wall-clock timeout can stop it.
    result = run_python("import time\nwhile True:\n    time.sleep(0.01)\n", Limits(timeout_s=1.0))
    assert result.status == "timeout"
    busy = run_python("while True:\n    pass\n", Limits(timeout_s=30.0, cpu_s=1))
    assert busy.status == "timeout"
    # The CPU rlimit's signal, not the 30 s wall clock (whose kill would read -SIGKILL).
    assert busy.returncode == -signal.SIGXCPU


def test_memory_hog_is_stopped() -> None:
    result = run_python("x = bytearray(2 << 30)\nprint(len(x))\n", FAST)
    assert result.status == "memory"
    assert "MemoryError" in result.stderr


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP server on a free local port: reachable from any ordinary process."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_the_hosts_ports_are_unreachable(listener: int) -> None:
    program = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {listener}), timeout=2)\n"
        "print('connected')\n"
    )
    result = run_python(program, FAST)
    assert result.status == "failed"
    assert "connected" not in result.stdout
    assert "ConnectionRefusedError" in result.stderr  # its own loopback has no such port


def test_the_working_directory_is_an_empty_tmpfs() -> None:
    program = "import os, pathlib\npathlib.Path('f.txt').write_text('x')\nprint(os.getcwd())\n"
    first = run_python(program, FAST)
    assert first.passed, first.stderr
    assert first.stdout.strip() == "/tmp/work"
    second = run_python("import os\nprint(os.listdir('.'))\n", FAST)
    assert second.stdout.strip() == "[]"


def test_it_refuses_to_run_without_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    # No bwrap on PATH: the reason names it, and nothing runs (no fallback).
    unavailable_reason.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        reason = unavailable_reason()
        assert reason is not None and "bubblewrap" in reason and "apt-get install" in reason
        with pytest.raises(SandboxUnavailable, match="bubblewrap"):
            run_python("print('ran')", FAST)
    finally:
        monkeypatch.undo()
        unavailable_reason.cache_clear()
    assert unavailable_reason() is None
