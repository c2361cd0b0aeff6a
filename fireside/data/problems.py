"""Arithmetic word problems whose expressions a calculator evaluates: the calculator skill's
training conversations and its held-out evaluation draw from the same generator, with
different seeds, and the evaluation's expressions are removed from training."""

from __future__ import annotations

import random
from dataclasses import dataclass

OPS = ["+", "-", "*", "/"]
# How people write the same operation; the model learns to turn each into the calculator's.
SPOKEN = {
    "+": ["plus", "+"],
    "-": ["minus", "-"],
    "*": ["times", "*", "x"],
    "/": ["divided by", "/"],
}
QUESTIONS = [
    "What is {q}?",
    "What's {q}?",
    "Calculate {q}.",
    "Compute {q}",
    "{q} = ?",
    "How much is {q}?",
    "Please work out {q}.",
    "Can you calculate {q} for me?",
    "Evaluate {q}.",
    "{q}?",
]


@dataclass(frozen=True)
class Problem:
    question: str  # what the user asks
    expression: str  # what the calculator is asked


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return str(rng.randint(1, 99))
    if kind < 0.8:
        return str(rng.randint(100, 9999))
    if kind < 0.95:
        return f"{rng.randint(0, 99)}.{rng.randint(1, 99)}"
    return str(rng.randint(10_000, 999_999))


def _chain(rng: random.Random, ops: int) -> tuple[str, str]:
    """An expression of `ops` operations: (as the user writes it, as the calculator reads it)."""
    numbers = [_number(rng) for _ in range(ops + 1)]
    chosen = [rng.choice(OPS) for _ in range(ops)]
    spoken_style = rng.random() < 0.25
    said, calc = [numbers[0]], [numbers[0]]
    for op, n in zip(chosen, numbers[1:], strict=True):
        said += [rng.choice(SPOKEN[op]) if spoken_style else op, n]
        calc += [op, n]
    if ops >= 2 and rng.random() < 0.3:
        # Parentheses around the first operation, so precedence is not always left to right.
        said = ["(", *said[:3], ")", *said[3:]]
        calc = ["(", *calc[:3], ")", *calc[3:]]
    return _join(said), _join(calc)


def _join(parts: list[str]) -> str:
    return " ".join(parts).replace("( ", "(").replace(" )", ")")


def problem(rng: random.Random) -> Problem:
    kind = rng.random()
    if kind < 0.12:
        p, n = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75, 7.5, 12.5]), rng.randint(2, 2000)
        q = f"{p}% of {n}"
        return Problem(rng.choice(QUESTIONS).format(q=q), q)
    said, calc = _chain(rng, rng.choice([1, 2, 2, 3, 3, 4]))
    return Problem(rng.choice(QUESTIONS).format(q=said), calc)


def held_out_problems(n: int = 100, seed: int = 1_000_003) -> list[Problem]:
    """The evaluation set: two to four operations, integers and decimals."""
    rng = random.Random(seed)
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < n:
        said, calc = _chain(rng, rng.choice([2, 3, 4]))
        if calc in seen:
            continue
        seen.add(calc)
        out.append(Problem(rng.choice(QUESTIONS).format(q=said), calc))
    return out
