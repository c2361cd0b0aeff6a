"""The bubblewrap command line: what the sandboxed program sees of the machine.

Inside, the program is uid 65534 in a user namespace of its own, pid 2 of a PID namespace of
its own (bwrap's reaper is pid 1: when the program ends, or bwrap is killed, the kernel kills
every process left in the namespace), with only a loopback interface (no route to the host's
ports, and abstract unix sockets are per network namespace), its own IPC and host name. Its
file system is built from nothing: `/usr` and the interpreter's prefixes read-only, a fresh
`/proc` of its own PID namespace, a minimal `/dev`, a size-capped tmpfs at `/tmp` (its working
directory and HOME are /tmp/work), and the program itself, copied in read-only. The data directory, the
project, `/root`, `/home`, `/run` and the host's `/tmp` are simply not there. bwrap drops every
capability and sets no_new_privs, and the program may make no user namespaces of its own.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fireside.errors import FiresideError

SANDBOX_UID = 65534  # "nobody", inside the user namespace
PROGRAM_DIR = "/sandbox"  # where the runner and the program are copied in, read-only
TMPFS = "/tmp"  # the one writable place, size-capped
WORK_DIR = "/tmp/work"  # on it: working directory, HOME and TMPDIR (empty, whatever is mounted)
PATH = "/usr/local/bin:/usr/bin:/bin"
ENABLE_HINT = (
    "install bubblewrap (apt-get install bubblewrap; `make serve` does) on a kernel that allows "
    "user namespaces (sysctl kernel.unprivileged_userns_clone=1, and on Ubuntu "
    "kernel.apparmor_restrict_unprivileged_userns=0)"
)


class SandboxUnavailable(FiresideError):
    """The namespaces the sandbox needs cannot be made here; nothing untrusted may run."""


def _merged_usr_entries() -> list[str]:
    """/bin, /lib... as the host has them: symlinks into /usr on a merged-/usr system, else
    read-only directories of their own."""
    args: list[str] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    return args


def _interpreter_dirs() -> list[str]:
    """The directories the interpreter and its libraries live in, when not under /usr: a
    pyenv or /opt build, and the virtual environment (its site-packages: numpy and friends)."""
    dirs: set[str] = set()
    for prefix in (sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)):
        real = str(Path(prefix).resolve())
        if real != "/usr" and not real.startswith("/usr/"):
            dirs.add(real)
        if prefix != real and not prefix.startswith("/usr/"):
            dirs.add(prefix)  # a symlinked prefix is reached under both names
    for d in dirs:
        if d == "/" or Path(d) == Path.home():
            raise SandboxUnavailable(
                f"the interpreter lives in {d}, which the sandbox would have to show whole; "
                "use a Python installed in its own directory (a virtual environment, /usr)"
            )
    # A directory inside another is mounted with it.
    return sorted(d for d in dirs if not any(d != o and d.startswith(o + "/") for o in dirs))


@functools.cache
def _supports(flag: str) -> bool:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    return flag in out.stdout + out.stderr


def bwrap_argv(disk_bytes: int, files: dict[str, int]) -> list[str]:
    """bwrap's arguments up to the command; `files` maps a name under PROGRAM_DIR to a file
    descriptor whose contents become that read-only file (they must be passed to the child)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {ENABLE_HINT}")
    argv = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",  # no ioctl(TIOCSTI) into a terminal it might share
    ]  # fmt: skip
    if _supports("--disable-userns"):  # bubblewrap 0.8+
        argv.append("--disable-userns")
    # The tmpfs first: an interpreter or virtualenv living under /tmp is mounted over it, not
    # hidden by it (bwrap applies its operations in order).
    argv += ["--size", str(disk_bytes), "--tmpfs", TMPFS, "--dir", WORK_DIR]
    argv += ["--ro-bind", "/usr", "/usr", *_merged_usr_entries()]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in _interpreter_dirs():  # may raise SandboxUnavailable
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--chdir", WORK_DIR]
    for name, fd in files.items():
        argv += ["--ro-bind-data", str(fd), f"{PROGRAM_DIR}/{name}"]
    argv += ["--clearenv"]
    for key, value in (("PATH", PATH), ("HOME", WORK_DIR), ("TMPDIR", WORK_DIR)):
        argv += ["--setenv", key, value]
    argv += ["--setenv", "LANG", "C.UTF-8"]
    return argv


@functools.cache
def unavailable_reason() -> str | None:
    """Why no sandbox can be made on this machine, or None when one can: bwrap starts the
    interpreter in every namespace above. Asked once per process."""
    try:
        argv = bwrap_argv(1 << 20, {})
    except SandboxUnavailable as e:
        return str(e)
    try:
        out = subprocess.run(
            [*argv, sys.executable, "-I", "-c", "pass"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": PATH},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap could not start ({e}): {ENABLE_HINT}"
    if out.returncode != 0:
        said = out.stderr.strip().splitlines()[-1:] or [f"exit status {out.returncode}"]
        return f"bubblewrap cannot make the sandbox here ({said[0]}): {ENABLE_HINT}"
    return None


def require() -> None:
    if (reason := unavailable_reason()) is not None:
        raise SandboxUnavailable(reason)
