"""What a family of function-writing tasks is, and the input-drawing helpers families share.

A family's texts are `string.Template`s (`$a`, `$b` name the arguments, `$k`, `$m` its
constants), so Python's own braces need no escaping. Bodies are written unindented; the
function's header and indentation are added when a task is made.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Args = tuple[Any, ...]
Consts = Mapping[str, int | str]


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # string | list | dict | arithmetic | parsing
    functions: tuple[str, ...]  # function-name variants
    args: tuple[tuple[str, ...], ...]  # argument-name variants
    what: str  # finishes "a function `f(x)` that ...": starts with a verb ("returns ...")
    body: str  # the reference solution's body
    bugs: tuple[str, ...]  # bodies of first attempts that are wrong (off by one, a wrong test...)
    draw: Callable[[random.Random, Consts], Args]  # one random call's arguments
    consts: Mapping[str, Sequence[int | str]] = field(default_factory=dict)
    edges: Callable[[Consts], list[Args]] = lambda c: []  # inputs every hidden test set has


WORDS = [
    "apple",
    "banana",
    "cherry",
    "river",
    "stone",
    "cloud",
    "level",
    "noon",
    "table",
    "garden",
    "window",
    "rocket",
    "paper",
    "moon",
    "star",
    "code",
    "tree",
    "lamp",
    "kayak",
    "radar",
    "orange",
    "house",
    "music",
    "green",
    "seven",
    "blue",
    "hat",
    "cat",
    "dog",
]


def word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def sentence(rng: random.Random, lo: int = 2, hi: int = 5) -> str:
    return " ".join(word(rng) for _ in range(rng.randint(lo, hi)))


def ints(
    rng: random.Random, shortest: int = 1, longest: int = 6, low: int = -9, high: int = 20
) -> list[int]:
    return [rng.randint(low, high) for _ in range(rng.randint(shortest, longest))]


ENDS_ALIKE = ("treat", "stars", "that", "Level", "Noon", "Anna", "Tenet", "dead")


def maybe_anagram(rng: random.Random, first: str) -> tuple[str, str]:
    """An anagram, the same letters in other numbers (where a set comparison fails), or not."""
    kind = rng.randrange(3)
    if kind == 0:
        return first, "".join(rng.sample(first, len(first)))
    if kind == 1:
        return first, first + rng.choice(first)
    return first, word(rng)


def titled(rng: random.Random, text: str) -> str:
    """Some words capitalized, so a solution that forgets about case shows it."""
    cased = (str.capitalize, str.upper, str.lower)
    return " ".join(rng.choices(cased, (3, 2, 5))[0](w) for w in text.split())


def with_repeated_max(rng: random.Random, xs: list[int]) -> list[int]:
    """At least two distinct numbers, the largest often twice (where `sorted(xs)[-2]` fails)."""
    xs = [*xs, max(xs) + rng.randint(1, 5)]
    return [*xs, max(xs)] if rng.random() < 0.6 else xs


def maybe_sorted(rng: random.Random, xs: list[int]) -> list[int]:
    return sorted(xs) if rng.random() < 0.5 else xs


def render(template: str, names: Mapping[str, str], consts: Consts) -> str:
    return string.Template(template).substitute({**names, **{k: str(v) for k, v in consts.items()}})
