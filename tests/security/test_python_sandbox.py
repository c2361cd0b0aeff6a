"""Finding 1 (high): the `python` tool was no boundary. Every attack of the review, and more
(tests/security/escape_corpus.py), is attempted from inside the sandbox and fails; the
controls run the same programs unsandboxed and see them succeed, so a program that could not
escape anyway proves nothing here."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fireside.sandbox import Limits, run_python
from tests.security.escape_corpus import CORPUS, Escape, render
from tests.security.sandbox_host import CORPUS_LIMITS, Host, host, survivor_seconds, survivors


@pytest.fixture(scope="module")
def target() -> Iterator[Host]:
    with host() as h:
        yield h


@pytest.mark.parametrize("escape", CORPUS, ids=[e.name for e in CORPUS])
def test_escape_fails(escape: Escape, target: Host) -> None:
    before = target.snapshot()
    result = run_python(render(escape.program, target.facts), CORPUS_LIMITS)
    said = result.stdout + result.stderr
    assert "ESCAPED" not in said, said
    assert target.snapshot() == before
    assert target.accepted == []
    assert target.planted() == []
    assert target.sleeper is not None and target.sleeper.poll() is None  # never signalled
    time.sleep(0.2)
    assert survivors(target.facts["SURVIVOR_SECONDS"]) == []


CONTROLS = [
    "read the secret key",
    "read the database",
    "read a file in the host's /tmp",
    "connect to a host TCP port",
    "connect to a host abstract unix socket",
    "the raw _socket module, loaded afresh",
    "read the server's environment",
    "read the command lines of the host's processes",
    "signal a host process",
]


@pytest.mark.parametrize("name", CONTROLS)
def test_control_the_attack_works_unsandboxed(name: str) -> None:
    # The same program, run as the server's own child without the sandbox, escapes: the corpus
    # really attempts what it says.
    escape = next(e for e in CORPUS if e.name == name)
    with host() as h:
        out = subprocess.run(
            [sys.executable, "-c", render(escape.program, h.facts)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert "ESCAPED" in out.stdout, out.stdout + out.stderr


def test_the_limits_bite() -> None:
    # Each attack ends the way its limit says, not merely without an ESCAPED line.
    with host() as h:
        facts = h.facts

        def run(name: str) -> tuple[str, int | None, str]:
            escape = next(e for e in CORPUS if e.name == name)
            r = run_python(render(escape.program, facts), CORPUS_LIMITS)
            return r.status, r.returncode, r.stdout + r.stderr

        assert run("run past the time limit")[0] == "timeout"
        assert run("spin past the CPU limit")[0] == "timeout"
        assert run("one huge allocation")[0] == "memory"
        status, _, said = run("memory spread over processes")
        assert status == "memory" or "held" in said, said
        status, _, said = run("a fork bomb")
        started = int(said.split("started")[-1].split()[0]) if "started" in said else 0
        assert 0 < started <= CORPUS_LIMITS.processes, said


def test_a_planted_pth_does_not_reach_the_next_run() -> None:
    # The review planted a .pth that ran in the next interpreter. Plant everywhere writable,
    # then look for it from a fresh run.
    plant = (
        "import os, site, sys, sysconfig\n"
        "targets = {site.getusersitepackages(), os.getcwd(), os.environ.get('HOME', '/tmp'),\n"
        "           *site.getsitepackages(), *sysconfig.get_paths().values()}\n"
        "planted = []\n"
        "for d in targets:\n"
        "    try:\n"
        "        os.makedirs(d, exist_ok=True)\n"
        "        with open(os.path.join(d, 'zz_fireside_persist.pth'), 'w') as fh:\n"
        '            fh.write(\'import os; os.environ["FIRESIDE_PERSISTED"] = "yes"\\n\')\n'
        "        planted.append(d)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(planted)\n"
    )
    first = run_python(plant)
    assert first.passed, first.stderr
    assert "/tmp" in first.stdout  # it did plant, in its throwaway tmpfs
    check = "import os, site\nprint(os.environ.get('FIRESIDE_PERSISTED', 'clean'))\n"
    second = run_python(check)
    assert second.passed and second.stdout.strip() == "clean", second


def test_a_child_left_running_is_gone_when_the_run_ends() -> None:
    seconds = survivor_seconds()
    program = (
        "import subprocess\n"
        f"subprocess.Popen(['sleep', '{seconds}'], start_new_session=True)\n"
        "print('left it')\n"
    )
    result = run_python(program, Limits(timeout_s=5.0))
    assert result.passed and "left it" in result.stdout, result
    deadline = time.monotonic() + 5
    while survivors(seconds) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors(seconds) == []


def test_without_a_sandbox_the_python_tool_is_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Where bubblewrap cannot make the sandbox, the tool is not offered (never run without it),
    # and one warning says why and how to enable it, however many tool lists are built.
    from fireside.sandbox import unavailable_reason
    from fireside.tools import builtin_tools, python_tool_off_reason

    for cached in (unavailable_reason, python_tool_off_reason):
        cached.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with caplog.at_level("WARNING", logger="fireside.tools"):
            for _ in range(3):
                assert [t.name for t in builtin_tools()] == ["calculator", "search"]
        warnings = [
            r.getMessage() for r in caplog.records if "python tool is off" in r.getMessage()
        ]
        assert len(warnings) == 1
        assert "bubblewrap" in warnings[0] and "apt-get install bubblewrap" in warnings[0]
    finally:
        monkeypatch.undo()
        for cached in (unavailable_reason, python_tool_off_reason):
            cached.cache_clear()
    assert [t.name for t in builtin_tools()] == ["calculator", "search", "python"]
