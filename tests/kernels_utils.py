"""The ggml kernels for the quantized tests, built through the Makefile (`make kernels`, which
`make test` runs first) when this checkout has no build yet."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fireside.kernels import ggml

ROOT = Path(__file__).resolve().parents[1]


def require_kernels() -> None:
    """Make sure the kernels load; a checkout without a build gets one from `make kernels`
    (a no-op when up to date). A build that fails fails the test, naming why."""
    if ggml.available():
        return
    if os.environ.get(ggml.LIB_ENV):
        pytest.fail(
            f"{ggml.LIB_ENV} is set but the kernels do not load: {ggml.unavailable_reason()}"
        )
    done = subprocess.run(["make", "-s", "kernels"], cwd=ROOT, capture_output=True, text=True)
    ggml.reset()
    if done.returncode != 0 or not ggml.available():
        pytest.fail(
            f"`make kernels` did not give working kernels ({ggml.unavailable_reason()}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
