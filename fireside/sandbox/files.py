"""Files a program wrote in its working directory, handed back out of the sandbox.

The tmpfs dies with the sandbox, so after the program ends (returns, raises or calls
sys.exit) the runner writes the working directory's regular files (symlinks not followed, the
first MAX_FILES by name, MAX_BYTES in all) as JSON with base64 contents to a file descriptor
the host opened onto a temporary file of its own. The program can write to that descriptor
too, so the host reads it as untrusted: a capped read, a strict shape, plain names only (no
path separators, no `.`/`..`), the same caps again; anything else is dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

MAX_FILES = 8
MAX_BYTES = 4 << 20  # all files together
MAX_NAME = 255
# base64 grows by 4/3; JSON adds a little per file. Anything longer is not the runner's.
MAX_REPORT_BYTES = MAX_BYTES * 4 // 3 + MAX_FILES * (MAX_NAME + 64) + 64


@dataclass(frozen=True)
class SandboxFile:
    name: str  # a plain file name, no directories
    data: bytes


# Appended to the runner (fireside/sandbox/run.py) when files are asked for; `fd` is the
# descriptor the host passed in. Bound before the program runs, so its own names cannot
# shadow it (it may still break it: then no files come back, nothing worse).
COLLECTOR = """\
def _fireside_collect(fd, max_files={max_files}, max_bytes={max_bytes}):
    import base64, json, os, stat, sys
    found, total = [], 0
    try:
        names = sorted(os.listdir("{work_dir}"))
    except OSError:
        names = []
    for name in names:
        path = "{work_dir}/" + name
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if len(found) == max_files:
            sys.stderr.write("note: only " + str(max_files) + " files are returned; " + name + " is not\\n")
            continue
        if total + st.st_size > max_bytes:
            sys.stderr.write("note: " + name + " is not returned (files over " + str(max_bytes >> 20) + " MiB in all)\\n")
            continue
        try:
            f = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(f, "rb") as fh:
                data = fh.read(max_bytes - total + 1)
        except OSError:
            continue
        if total + len(data) > max_bytes:
            continue
        total += len(data)
        found.append(dict(name=name, data=base64.b64encode(data).decode("ascii")))
    os.write(fd, json.dumps(found).encode("ascii"))
    os.close(fd)
"""


def collector(work_dir: str) -> str:
    return COLLECTOR.format(max_files=MAX_FILES, max_bytes=MAX_BYTES, work_dir=work_dir)


def plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
        and name.isprintable()
    )


def read_report(path: Path) -> list[SandboxFile]:
    """The files in the report at `path`, or those of them that pass every check."""
    with path.open("rb") as fh:
        raw = fh.read(MAX_REPORT_BYTES + 1)
    if not raw or len(raw) > MAX_REPORT_BYTES:
        return []
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    if not isinstance(entries, list):
        return []
    files: list[SandboxFile] = []
    total, seen = 0, set()
    for entry in entries:  # as many as fit in MAX_REPORT_BYTES; the first MAX_FILES good ones kept
        if len(files) == MAX_FILES:
            break
        if not isinstance(entry, dict) or set(entry) != {"name", "data"}:
            continue
        name, encoded = entry["name"], entry["data"]
        if not plain_name(name) or name in seen or not isinstance(encoded, str):
            continue
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if total + len(data) > MAX_BYTES:
            continue
        seen.add(name)
        total += len(data)
        files.append(SandboxFile(name, data))
    return files
