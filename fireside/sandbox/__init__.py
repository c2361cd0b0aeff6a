"""The one place untrusted code runs: model-written Python for the `python` tool and HumanEval.

The boundary is the kernel's, never Python's: bubblewrap puts the program in new user, PID,
network, IPC, UTS and mount namespaces, with a read-only view of the interpreter and nothing
else of the machine, a size-capped tmpfs as its only writable place, an empty environment, and
rlimits; a cgroup caps its memory and processes together where one can be made. Where the
namespaces cannot be made, `unavailable_reason()` says why, and nothing runs.

    result = run_python("print(6 * 7)")
    result.status, result.stdout  # ("passed", "42\\n")
"""

from fireside.sandbox.bwrap import SandboxUnavailable, unavailable_reason
from fireside.sandbox.run import Limits, SandboxResult, Status, run_python

__all__ = [
    "Limits",
    "SandboxResult",
    "SandboxUnavailable",
    "Status",
    "run_python",
    "unavailable_reason",
]
