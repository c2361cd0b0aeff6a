"""Uploaded files' bytes on disk: one copy per content, at DATA/files/ab/<sha256>, readable
by the server's user alone, written atomically (a temporary file renamed into place, so a
reader never sees half a file). The database says which rows use a content; a content no row
uses any more is deleted (`Blobs.forget`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Blobs:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Held around "write the bytes, then commit the row that uses them" and "count the
        # rows that use them, then delete the bytes", so in this process a delete never
        # removes bytes a concurrent upload of the same content has just committed to.
        self.lock = asyncio.Lock()

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / digest[:2] / digest

    def write(self, digest: str, data: bytes) -> None:
        """Keeps `data` under its digest (once: an existing copy is left as it is)."""
        path = self.path(digest)
        if path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, digest: str) -> bytes | None:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
