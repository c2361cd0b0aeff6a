"""File-system steps shared by the stages that publish directories (data shards, checkpoints)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def swap_dir(new: Path, target: Path, aside: Path) -> None:
    """Put the complete directory `new` at `target`. An existing target is renamed to `aside`
    first and deleted only once `new` is in place: never delete first, so a crash leaves one
    whole copy, not none."""
    if not target.exists():
        os.replace(new, target)
        return
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)
