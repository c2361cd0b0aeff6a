"""The sandbox as HumanEval uses it: right code passes; wrong, endless, greedy or networked code
does not. (tests/security/test_python_sandbox.py attacks it.)"""

from __future__ import annotations

import base64
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireside.sandbox import Limits, run_python, unavailable_reason
from fireside.sandbox.bwrap import SandboxUnavailable
from fireside.sandbox.files import MAX_BYTES, MAX_FILES, read_report

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


# A 1x1 PNG, written by hand: the sandbox needs no image library for this test.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f3d1f40000000049454e44ae426082"
)


def test_files_written_come_back_only_when_asked() -> None:
    program = (
        "import os, sys\n"
        f"open('dot.png', 'wb').write({TINY_PNG!r})\n"
        "open('notes.txt', 'w').write('hi')\n"
        "os.symlink('/etc/hostname', 'link')\n"  # not followed
        "os.mkdir('sub')\n"
        "open('sub/inner.txt', 'w').write('x')\n"  # the working directory's own files only
        "sys.exit(3)\n"  # the files come back whatever way the program ends
    )
    result = run_python(program, FAST, collect_files=True)
    assert result.returncode == 3, result.stderr
    assert [(f.name, f.data) for f in result.files] == [("dot.png", TINY_PNG), ("notes.txt", b"hi")]
    raised = run_python(
        "open('a.txt', 'w').write('a')\nraise ValueError('no')\n", FAST, collect_files=True
    )
    assert raised.status == "failed" and "ValueError: no" in raised.stderr
    assert [f.name for f in raised.files] == ["a.txt"]
    assert run_python(program, FAST).files == []  # the tool's and HumanEval's runs: unchanged


def test_files_over_the_caps_are_not_returned() -> None:
    program = (
        "for i in range(10):\n"
        "    open(f'f{i}.txt', 'w').write(str(i))\n"
        "open('zbig.bin', 'wb').write(b'x' * (5 << 20))\n"
    )
    result = run_python(program, FAST, collect_files=True)
    assert result.passed, result.stderr
    assert [f.name for f in result.files] == [f"f{i}.txt" for i in range(MAX_FILES)]
    assert "only 8 files are returned" in result.stderr


def test_a_forged_report_is_checked_like_any_untrusted_input() -> None:
    # The program finds the report's descriptor, writes its own and exits before the runner's.
    forged = json.dumps(
        [
            {"name": "../../etc/cron.d/x", "data": "eA=="},
            {"name": "/abs", "data": "eA=="},
            {"name": "..", "data": "eA=="},
            {"name": "n" * 300, "data": "eA=="},
            {"name": "", "data": "eA=="},
            {"name": "nul\x00.txt", "data": "eA=="},
            {"name": "extra.txt", "data": "eA==", "path": "/etc"},
            {"name": "dir\\\\evil", "data": "eA=="},
            {"name": "bad64.txt", "data": "not base64!"},
            {"name": "huge.bin", "data": base64.b64encode(b"y" * (MAX_BYTES + 1)).decode()},
            {"name": "ok.txt", "data": "eA=="},
            {"name": "ok.txt", "data": "eQ=="},
        ]
    )
    program = (
        "import os\n"
        "for fd in [int(fd) for fd in os.listdir('/proc/self/fd')]:\n"
        "    if fd > 2 and os.path.exists(f'/proc/self/fd/{fd}'):\n"
        "        if os.readlink(f'/proc/self/fd/{fd}').endswith('/files'):\n"
        f"            os.write(fd, {forged!r}.encode())\n"
        "os._exit(0)\n"
    )
    result = run_python(program, FAST, collect_files=True)
    assert result.passed, result.stderr
    assert [(f.name, f.data) for f in result.files] == [("ok.txt", b"x")]


def test_read_report_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    path = tmp_path / "files"
    for raw in (b"", b"{", b'{"name": "a"}', b"[1, 2]", b"[" * 100_000, b" " * (MAX_BYTES * 2)):
        path.write_bytes(raw)
        assert read_report(path) == []
