"""run_python: one program, one sandbox (fireside/sandbox/bwrap.py), thrown away afterwards.

The limits, each enforced by the kernel: rlimits on CPU time, address space, file size, core
dumps and processes, set by the program's first statements (they only ever go down); a cgroup
capping memory and processes across all of the run's processes where one can be made
(cgroups.py); a tmpfs of `disk_bytes`; and a wall clock that kills bwrap, whose death takes
the PID namespace and every process in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fireside.sandbox.bwrap import (
    PATH,
    PROGRAM_DIR,
    WORK_DIR,
    SandboxUnavailable,
    bwrap_argv,
    require,
)
from fireside.sandbox.cgroups import Cgroup, make_cgroup
from fireside.sandbox.files import SandboxFile, collector, read_report

Status = Literal["passed", "failed", "timeout", "memory"]
OUTPUT_TAIL = 4000  # characters of stdout/stderr kept in a result
# Beside the program's own: bwrap outside, its reaper (pid 1 inside) and the interpreter.
SANDBOX_PROCESSES = 3


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space of each process, and of all of them together
    file_bytes: int = 16 << 20  # largest file the program may write (stdout included)
    processes: int = 16  # processes and threads the program may start (its children and theirs)
    disk_bytes: int = 64 << 20  # its writable tmpfs


@dataclass
class SandboxResult:
    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    files: list[SandboxFile] = field(default_factory=list)  # only when asked for (collect_files)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def limits_prelude(limits: Limits) -> str:
    """The rlimits as the program's first statements: soft and hard alike, so the program may
    lower them but never raise them. (Not a preexec_fn: HumanEval runs programs from several
    threads, and code between fork and exec can deadlock there.) RLIMIT_NPROC counts the
    processes of the sandbox's user namespace: the reaper, the interpreter and the program's."""
    nproc = limits.processes + SANDBOX_PROCESSES - 1
    return (
        "import resource as _r\n"
        f"_r.setrlimit(_r.RLIMIT_CPU, ({limits.cpu_s}, {limits.cpu_s + 1}))\n"
        f"_r.setrlimit(_r.RLIMIT_AS, ({limits.memory_bytes}, {limits.memory_bytes}))\n"
        f"_r.setrlimit(_r.RLIMIT_FSIZE, ({limits.file_bytes}, {limits.file_bytes}))\n"
        "_r.setrlimit(_r.RLIMIT_CORE, (0, 0))\n"
        f"_r.setrlimit(_r.RLIMIT_NPROC, ({nproc}, {nproc}))\n"
        "del _r\n"
    )


# Runs the program as `program.py` after the prelude, so its tracebacks show its own file name
# and line numbers, with no sandbox frames or paths: the model reads them.
RUNNER = """\
def _fireside_run(path, collect=None):
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
    try:
        exec(code, dict(__name__="__main__", __builtins__=__builtins__))
    finally:  # also after an exception or sys.exit: their report and status go on as usual
        if collect is not None:
            try:
                _fireside_collect(collect)
            except BaseException:
                pass
"""

# Puts the shell in each cgroup named before `--`, then becomes bwrap: every process of the
# run is counted from its first instruction (no window between a fork and a move).
JOIN_CGROUPS = (
    'for f do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; shift; exec "$@"'
)


def _memfd(name: str, text: str) -> int:
    fd = os.memfd_create(name)
    os.write(fd, text.encode("utf-8"))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_python(
    source: str, limits: Limits | None = None, *, collect_files: bool = False
) -> SandboxResult:
    """Run `source` as a script in a fresh sandbox; `passed` means it exited 0 within the
    limits. With `collect_files`, the files it left in its working directory come back too
    (fireside/sandbox/files.py). Raises SandboxUnavailable where no sandbox can be made:
    never runs it without."""
    limits = limits or Limits()
    require()
    with tempfile.TemporaryDirectory(prefix="fireside-sandbox-") as tmp:
        report = os.open(Path(tmp) / "files", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            return _run_in(Path(tmp), source, limits, report if collect_files else None)
        finally:
            os.close(report)


def _run_in(tmp: Path, source: str, limits: Limits, report: int | None) -> SandboxResult:
    runner = limits_prelude(limits) + RUNNER
    program = f"{PROGRAM_DIR}/program.py"
    if report is None:
        runner += f"_fireside_run({program!r})\n"
    else:  # Popen's pass_fds keeps the descriptor's number, and bwrap hands it on
        runner += collector(WORK_DIR) + f"_fireside_run({program!r}, {report})\n"
    fds = {"run.py": _memfd("run.py", runner), "program.py": _memfd("program.py", source)}
    cgroup = make_cgroup(
        limits.memory_bytes + limits.disk_bytes, limits.processes + SANDBOX_PROCESSES
    )
    try:
        argv = bwrap_argv(limits.disk_bytes, fds)
        argv += [sys.executable, "-I", "-B", f"{PROGRAM_DIR}/run.py"]
        if cgroup is not None:
            argv = ["/bin/sh", "-c", JOIN_CGROUPS, "sh", *cgroup.procs_files(), "--", *argv]
        passed = list(fds.values()) + ([report] if report is not None else [])
        result = _run(tmp, argv, passed, limits, cgroup)
    finally:
        for fd in fds.values():
            os.close(fd)
        if cgroup is not None:
            cgroup.remove()
    if report is not None:
        result.files = read_report(tmp / "files")
    return result


def _run(
    tmp: Path, argv: list[str], fds: list[int], limits: Limits, cgroup: Cgroup | None
) -> SandboxResult:
    out_path, err_path = tmp / "stdout", tmp / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv,
            env={"PATH": PATH},  # bwrap's own environment shows in the sandbox's /proc/1
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=fds,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # bwrap's death kills its reaper (--die-with-parent), and with it the namespace.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stdout, stderr = _tail(out_path), _tail(err_path)
    if proc.returncode == 125 and cgroup is not None and not stdout and not stderr:
        raise SandboxUnavailable("the sandbox could not join its cgroup")
    code = _signal_code(proc.returncode)
    status: Status
    if timed_out or code == -signal.SIGXCPU:
        status = "timeout"
    elif code != 0 and ("MemoryError" in stderr or (cgroup is not None and cgroup.oom_killed())):
        status = "memory"
    else:
        status = "passed" if code == 0 else "failed"
    return SandboxResult(status, code, stdout, stderr)


def _signal_code(code: int) -> int:
    """bwrap reports a program killed by signal N as exit status 128 + N; Popen's own
    convention (and the tool's "killed (SIGKILL)") is -N."""
    if code > 128 and code - 128 in signal.valid_signals():
        return -(code - 128)
    return code


def _tail(path: Path) -> str:
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - OUTPUT_TAIL))
        return fh.read().decode("utf-8", errors="replace")
