"""Commands that decode re-execute themselves under jemalloc where the machine has it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fireside.allocator import jemalloc_library

# Prints its pid on every start, then whether jemalloc is mapped into the process.
PROBE = (
    "import os\n"
    "print(os.getpid())\n"
    "from fireside.allocator import reexec_with_jemalloc\n"
    "reexec_with_jemalloc()\n"
    "print('libjemalloc' in open('/proc/self/maps').read())\n"
)


def run_probe(**env: str) -> tuple[int, bool]:
    """(how many times the probe started, whether it ended under jemalloc)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FIRESIDE_JEMALLOC")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    *pids, loaded = out.stdout.split()
    assert len(set(pids)) == 1  # re-executed in place: the same process
    return len(pids), loaded == "True"


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or jemalloc_library() is None,
    reason="needs Linux with jemalloc installed (Debian: libjemalloc2)",
)
def test_reexecutes_in_place_under_jemalloc_once() -> None:
    assert run_probe() == (2, True)
    # Already preloaded: the process goes on as it is (no second exec, no loop).
    assert run_probe(LD_PRELOAD=str(jemalloc_library())) == (1, True)


def test_opting_out_keeps_the_system_allocator() -> None:
    assert run_probe(FIRESIDE_JEMALLOC="0") == (1, False)
