"""The HumanEval sandbox: right code passes; wrong, endless, greedy or networked code does not."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fireside.eval.sandbox import NETWORK_BLOCK, Limits, network_namespace_prefix, run_python

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


def test_network_is_unreachable(listener: int) -> None:
    program = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {listener}), timeout=2)\n"
        "print('connected')\n"
    )
    result = run_python(program, FAST)
    assert result.status == "failed"
    assert "connected" not in result.stdout
    assert "network access is disabled" in result.stderr


RAW_CONNECT = (
    # Bypass the Python-level block by loading a fresh copy of the C extension.
    "import importlib.util\n"
    "spec = importlib.util.find_spec('_socket')\n"
    "raw = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(raw)\n"
    "s = raw.socket(raw.AF_INET, raw.SOCK_STREAM)\n"
    "s.settimeout(2)\n"
    "s.connect(('127.0.0.1', {port}))\n"
    "print('connected')\n"
)


def test_the_raw_socket_bypass_works_outside_the_sandbox(listener: int) -> None:
    # Proves the next test's program really reaches the network when nothing stops it.
    out = subprocess.run(
        [sys.executable, "-c", NETWORK_BLOCK + RAW_CONNECT.format(port=listener)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "connected", out.stderr


@pytest.mark.skipif(
    not network_namespace_prefix(), reason="unshare cannot create a network namespace here"
)
def test_network_namespace_blocks_even_the_raw_socket_bypass(listener: int) -> None:
    result = run_python(RAW_CONNECT.format(port=listener), FAST)
    assert result.status == "failed"
    assert "connected" not in result.stdout
    assert "OSError" in result.stderr or "Error" in result.stderr


def test_cwd_is_a_throwaway_directory() -> None:
    program = "import os, pathlib\npathlib.Path('f.txt').write_text('x')\nprint(os.getcwd())\n"
    first = run_python(program, FAST)
    assert first.passed, first.stderr
    import pathlib

    assert not pathlib.Path(first.stdout.strip()).exists()  # removed afterwards
    assert "fireside-sandbox-" in first.stdout


def test_children_left_behind_are_killed_with_the_program() -> None:
    program = "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nprint(child.pid)\n"
    result = run_python(program, FAST)
    assert result.passed, result.stderr
    pid = int(result.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False
