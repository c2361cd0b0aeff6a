"""A cgroup per sandboxed run: one cap on the memory and the processes of all its processes.

rlimits are per process: sixty processes under a 512 MiB address-space limit each still use
gigabytes, and the kernel does not apply RLIMIT_NPROC to a uid that maps to root. A cgroup
counts the whole run (tmpfs pages included). It is made beside the server's own cgroup: on
cgroup v1 in the `memory` and `pids` hierarchies, on v2 in the unified one. Where the server
may not make one (an unprivileged user without a delegated cgroup), there is none and the
rlimits alone apply; `make_cgroup` says so by returning None.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per controller ("" for the v2 hierarchy)."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _hierarchy_dir(mount: Path, own: str) -> Path:
    # In a cgroup namespace the mount's root is our own cgroup; elsewhere the path is below it.
    below = mount / own.lstrip("/")
    return below if below.is_dir() else mount


@dataclass
class Cgroup:
    dirs: list[Path]
    v2: bool
    limits: set[str] = field(default_factory=set)  # "memory", "pids": the caps that hold

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_killed(self) -> bool:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for d in self.dirs:
            with contextlib.suppress(OSError):
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        return False

    def kill(self) -> None:
        """SIGKILL whatever is left in it (a child that left the sandbox's process group)."""
        for d in self.dirs:
            if self.v2 and (d / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (d / "cgroup.kill").write_text("1")
                continue
            for _ in range(100):  # a process may fork between the read and the kill
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.005)

    def remove(self) -> None:
        self.kill()
        for d in self.dirs:
            for _ in range(200):  # rmdir fails while killed processes are still exiting
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def make_cgroup(memory_bytes: int, processes: int) -> Cgroup | None:
    """A fresh cgroup capping memory (swap included where the kernel accounts it) and the
    number of processes and threads; None where none can be made here."""
    name = f"fireside-sandbox-{uuid.uuid4().hex[:12]}"
    own = _own_paths()
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v2 alone
        group = Cgroup([_hierarchy_dir(CGROUP_ROOT, own.get("", "/")) / name], v2=True)
        files = {"memory": ("memory.max",), "pids": ("pids.max",)}
    else:
        dirs = []
        for controller in ("memory", "pids"):
            mount = CGROUP_ROOT / controller
            if controller in own and mount.is_dir():
                dirs.append(_hierarchy_dir(mount, own[controller]) / name)
        group = Cgroup(dirs, v2=False)
        files = {"memory": ("memory.limit_in_bytes",), "pids": ("pids.max",)}
    made = []
    for d in group.dirs:
        with contextlib.suppress(OSError):
            d.mkdir()
            made.append(d)
    group.dirs = made
    if not made:
        return None
    values = {"memory": str(memory_bytes), "pids": str(processes)}
    for limit, names in files.items():
        for d in made:
            if all((d / n).exists() and _write(d / n, values[limit]) for n in names):
                group.limits.add(limit)
    # No swapping out of the cap: memsw (v1) must not be below the memory limit, so it follows.
    for d in made:
        if group.v2:
            _write(d / "memory.swap.max", "0")
        elif (d / "memory.memsw.limit_in_bytes").exists():
            _write(d / "memory.memsw.limit_in_bytes", str(memory_bytes))
    if not group.limits:
        group.remove()
        return None
    return group
