"""The families of small function-writing tasks: what each asks, its reference solution, the
realistic bugs a first attempt makes, and how to draw inputs for it (`base.Family`)."""

from __future__ import annotations

from fireside.data.program_families.arithmetic import ARITHMETIC
from fireside.data.program_families.base import Args, Consts, Family, render
from fireside.data.program_families.containers import DICT, LIST
from fireside.data.program_families.text import PARSING, STRING

FAMILIES: tuple[Family, ...] = (*STRING, *LIST, *DICT, *ARITHMETIC, *PARSING)

__all__ = ["FAMILIES", "Args", "Consts", "Family", "render"]
