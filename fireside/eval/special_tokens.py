"""Answers must never show a special token's text (`<|tool_call|>`, `<|end|>` ...): those
texts are the template's markers, and one in an answer means a marker leaked through
detokenizing or the tool loop, or the model learnt to write one as text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def special_texts_in(answer: str, special_texts: Sequence[str]) -> list[str]:
    """The special tokens' texts that `answer` holds, each once, in the order first seen."""
    texts = [t for t in special_texts if t]
    if not texts:
        return []
    # Longest first, so a token that is a prefix of another is not reported in its place.
    pattern = re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))
    return list(dict.fromkeys(m.group() for m in pattern.finditer(answer)))


@dataclass(frozen=True)
class SpecialTokenCount:
    answers: int
    with_special: int  # answers holding any special token's text
    example: str | None = None  # the first text found, for the report

    def __str__(self) -> str:
        return f"{self.with_special}/{self.answers}"


def count_special(answers: Iterable[str], special_texts: Sequence[str]) -> SpecialTokenCount:
    n = hit = 0
    example = None
    for answer in answers:
        n += 1
        found = special_texts_in(answer, special_texts)
        if found:
            hit += 1
            example = example or found[0]
    return SpecialTokenCount(answers=n, with_special=hit, example=example)
