"""The console script is installed and parses its commands."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fireside.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "serve" in out.stdout
