"""Run untrusted, model-written Python in a subprocess that cannot do much harm.

Layers, each cheap: a throwaway directory as cwd and HOME; `python -I` (no user site, no
PYTHON* variables, no script directory on sys.path); rlimits on CPU time, address space, file
size and core dumps; a cap on the processes it may start; a wall-clock timeout that kills the
whole process group; and no network — a fresh network namespace (`unshare -n`) where the
kernel allows it, and in any case a prelude that replaces socket creation with an error.

The process cap is two layers too: RLIMIT_NPROC, which the kernel enforces for every user but
root (it counts all of the user's processes, so it is set to those running now plus the cap),
and, for root as well, a prelude that counts the processes the program starts from Python
(fork, subprocess, os.system, posix_spawn) and refuses those past the cap; a child it forks
may start none of its own. This is containment for buggy or silly code, not
a security boundary against a determined attacker; run evaluations in a container for that.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory"]

# Runs first in every sandboxed program. `_socket` is the C module under `socket`, so both go.
NETWORK_BLOCK = """\
def _fireside_no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")
import socket as _s, _socket as _cs
for _m in (_s, _cs):
    for _name in ("socket", "socketpair", "create_connection", "create_server", "fromfd", "getaddrinfo"):
        if hasattr(_m, _name):
            setattr(_m, _name, _fireside_no_network)
del _s, _cs, _m, _name
"""
OUTPUT_TAIL = 4000  # characters of stdout/stderr kept in a result


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space
    file_bytes: int = 16 << 20  # largest file the program may write (stdout included)
    processes: int = 16  # processes the program may start (its children and theirs)


@dataclass
class SandboxResult:
    status: Status
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """The `unshare` invocation that gives a process no network, or () if none works here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    # As root `-n` suffices; as a user, a user namespace (`-r`) grants the right to make one.
    for flags in (("-n",), ("-r", "-n")):
        try:
            ok = subprocess.run(
                [unshare, *flags, "true"], capture_output=True, timeout=10
            ).returncode
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok == 0:
            return (unshare, *flags)
    return ()


# Counts the processes a program starts from Python; `{limit}` is filled in.
PROCESS_GUARD = """\
def _fireside_guard_processes(limit):
    import errno, os, _posixsubprocess
    left = [limit]

    def guard(fn, forks=False):
        def start(*args, **kwargs):
            if left[0] <= 0:
                raise BlockingIOError(
                    errno.EAGAIN, f"the sandbox allows at most {{limit}} processes"
                )
            left[0] -= 1
            pid = fn(*args, **kwargs)
            if forks and pid == 0:
                left[0] = 0  # a forked child starts none of its own
            return pid
        return start

    for name in ("fork", "forkpty"):
        if hasattr(os, name):
            setattr(os, name, guard(getattr(os, name), forks=True))
    for name in ("system", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, guard(getattr(os, name)))
    _posixsubprocess.fork_exec = guard(_posixsubprocess.fork_exec)
    if os.getuid() != 0:  # the kernel's own limit, which it never applies to root
        import resource
        mine = 0
        for entry in os.listdir("/proc"):
            try:
                mine += entry.isdigit() and os.stat(f"/proc/{{entry}}").st_uid == os.getuid()
            except OSError:
                pass
        resource.setrlimit(resource.RLIMIT_NPROC, (mine + limit, mine + limit))
_fireside_guard_processes({limit})
del _fireside_guard_processes
"""


def limits_prelude(limits: Limits) -> str:
    """Set the rlimits as the program's first statements. (Not a preexec_fn: HumanEval runs
    programs from several threads, and code between fork and exec can deadlock there.)"""
    return (
        "import resource as _r\n"
        f"_r.setrlimit(_r.RLIMIT_CPU, ({limits.cpu_s}, {limits.cpu_s + 1}))\n"
        f"_r.setrlimit(_r.RLIMIT_AS, ({limits.memory_bytes}, {limits.memory_bytes}))\n"
        f"_r.setrlimit(_r.RLIMIT_FSIZE, ({limits.file_bytes}, {limits.file_bytes}))\n"
        "_r.setrlimit(_r.RLIMIT_CORE, (0, 0))\n"
        "del _r\n" + PROCESS_GUARD.format(limit=limits.processes)
    )


# Runs the program as `program.py` after the preludes, so its tracebacks show its own file name
# and line numbers, with no sandbox frames or paths: the model reads them.
RUNNER = """\
def _fireside_run(path):
    import linecache, sys, traceback
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    linecache.cache["program.py"] = (len(source), None, source.splitlines(True), "program.py")

    def own_frames_only(kind, value, tb):
        # The program's frames and those of the library it called; none of the sandbox's.
        top = traceback.TracebackException(kind, value, tb)
        report, seen = top, set()
        while report is not None and id(report) not in seen:
            seen.add(id(report))
            frames = [f for f in report.stack if f.filename != sys.argv[0]]
            report.stack = traceback.StackSummary.from_list(frames)
            report = report.__cause__ or report.__context__
        sys.stderr.write("".join(top.format()))

    sys.excepthook = own_frames_only
    code = compile(source, "program.py", "exec")
    exec(code, dict(__name__="__main__", __builtins__=__builtins__))
_fireside_run({path!r})
"""


def run_python(source: str, limits: Limits | None = None) -> SandboxResult:
    """Run `source` as a script; `passed` means it exited 0 within the limits."""
    limits = limits or Limits()
    with tempfile.TemporaryDirectory(prefix="fireside-sandbox-") as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        program = root / "program.py"
        program.write_text(source, encoding="utf-8")
        script = root / "run.py"
        runner = RUNNER.format(path=str(program))
        script.write_text(limits_prelude(limits) + NETWORK_BLOCK + runner, encoding="utf-8")
        out_path, err_path = root / "stdout", root / "stderr"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(work)}
        cmd = [*network_namespace_prefix(), sys.executable, "-I", "-B", str(script)]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, so a kill takes its children
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        stdout = _tail(out_path)
        stderr = _tail(err_path)
    code = proc.returncode
    status: Status
    if timed_out or code == -signal.SIGXCPU:
        status = "timeout"
    elif code != 0 and "MemoryError" in stderr:
        status = "memory"
    else:
        status = "passed" if code == 0 else "failed"
    return SandboxResult(status, code, stdout, stderr)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path) -> str:
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - OUTPUT_TAIL))
        return fh.read().decode("utf-8", errors="replace")
