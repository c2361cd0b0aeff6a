"""jemalloc for the processes that decode, where the machine has it.

A CPU decode step calls oneDNN about fifty times and runs a few hundred small ops, and each
allocates and frees buffers. glibc's malloc spends a measurable share of that time
consolidating its bins: on the project's CI machine a single-stream decode step of
bench/engine.py's model takes ~4-6% less time under jemalloc, and batched decode the same
(`bench/engine.py` prints which allocator it ran under; `FIRESIDE_JEMALLOC=0` gives the glibc
figures to compare).

A process picks its allocator when it starts, so `reexec_with_jemalloc` runs the current
command again, in place (same pid), with jemalloc preloaded. It does nothing where jemalloc is
not installed (Debian and Ubuntu: `apt install libjemalloc2`), is already loaded, or
FIRESIDE_JEMALLOC=0 says no.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def jemalloc_library() -> str | None:
    """The jemalloc shared library to preload, or None if the machine has none."""
    for d in _DIRS:
        path = Path(d) / "libjemalloc.so.2"
        if path.exists():
            return str(path)
    return ctypes.util.find_library("jemalloc")


def running_jemalloc() -> bool:
    return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def reexec_with_jemalloc() -> None:
    """Replace this process with the same command under jemalloc, when that applies.

    Call it first thing in a command's entry point, never from library code: it does not
    return when it re-executes.
    """
    if not sys.platform.startswith("linux") or os.environ.get("FIRESIDE_JEMALLOC") == "0":
        return
    # A preload that failed to load leaves the name in LD_PRELOAD too: no second attempt.
    if running_jemalloc():
        return
    library = jemalloc_library()
    if library is None:
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    env = {**os.environ, "LD_PRELOAD": preload}
    # By default jemalloc hands freed pages back to the kernel as they age, and buffers of
    # 8 MiB and more at once; batched decode allocates such buffers (the gathered KV history)
    # in every layer of every step, and faulting them in again made it ~2x slower. Kept
    # pages are reused, so memory stays at the serving peak, which the KV pool and the
    # token budget bound.
    env.setdefault("MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
