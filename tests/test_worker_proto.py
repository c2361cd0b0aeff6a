"""The checked-in gRPC code is what `make proto` makes from worker.proto today."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_proto  # a script (scripts/), not a module of the package  # noqa: E402


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    for made in gen_proto.generate(tmp_path):
        checked_in = ROOT / made.relative_to(tmp_path)
        assert checked_in.read_text() == made.read_text(), f"run `make proto`: {checked_in}"
