"""llguidance grammars as the engine's `TokenConstraint`: one matcher per sample walks the
grammar a token at a time and hands the sampler the mask of tokens that keep the output valid.

The API compiles its grammars (JSON schema, regex, Lark) through here, and so does the tool
loop, which constrains every tool call to the offered tools' schemas; neither needs a web
framework for it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import llguidance
import numpy as np
import torch
from torch import Tensor

from fireside.model.tokenizer import Tokenizer


class GrammarConstraint:
    """One sample's walk through a grammar; satisfies the engine's `TokenConstraint`."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str) -> None:
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self.eos = tokenizer.eos_token

    def allowed(self, vocab_size: int) -> Tensor | None:
        if self.matcher.is_error():
            # Cannot happen while the engine honours the mask; end the sample cleanly if it does.
            mask = torch.zeros(vocab_size, dtype=torch.bool)
            mask[self.eos] = True
            return mask
        words = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        bits = np.unpackbits(words, bitorder="little")[:vocab_size]
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[: len(bits)] = torch.from_numpy(bits.astype(np.bool_))
        return mask

    def accept(self, token_id: int) -> None:
        self.matcher.consume_token(token_id)

    def is_finished(self) -> bool:
        return bool(self.matcher.is_stopped())


class GrammarFactory:
    """`SamplingParams.constraint_factory` for a grammar: a fresh GrammarConstraint per sample.
    Unlike a closure it says what it is (the grammar, the end tokens, the logits width), so a
    gateway can send it to a model worker, which builds the same matcher there."""

    def __init__(self, vocabulary: llguidance.LLTokenizer, grammar: str) -> None:
        self.vocabulary, self.grammar = vocabulary, grammar

    def __call__(self) -> GrammarConstraint:
        return GrammarConstraint(self.vocabulary, self.grammar)

    @property
    def end_token_ids(self) -> list[int]:
        return [int(t) for t in self.vocabulary.eos_tokens]

    @property
    def vocab_size(self) -> int:
        return int(self.vocabulary.vocab_size)


def lark_grammar(source: str) -> str:
    return str(llguidance.LLMatcher.grammar_from_lark(source))


def grammar_error(grammar: str, tokenizer: llguidance.LLTokenizer) -> str | None:
    """Why the grammar does not compile against this vocabulary; None when it does."""
    error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    return error if error and not error.startswith("WARNING") else None


# llguidance's view of a vocabulary costs about a second for 150k tokens: one per tokenizer
# and set of end tokens, for as long as the tokenizer lives.
_cache: weakref.WeakKeyDictionary[Tokenizer, dict[tuple[int, ...], llguidance.LLTokenizer]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def grammar_tokenizer(
    tokenizer: Tokenizer, end_ids: Sequence[int], n_vocab: int | None = None
) -> llguidance.LLTokenizer:
    """The tokenizer as llguidance reads it; `end_ids` are the tokens that may end a sample
    once the grammar is satisfied."""
    key = (n_vocab or tokenizer.vocab_size, *sorted(set(end_ids)))
    with _lock:
        made = _cache.setdefault(tokenizer, {})
        if key not in made:
            made[key] = llguidance.LLTokenizer(
                tokenizer.backend.to_str(), n_vocab=key[0], eos_token=list(key[1:]) or None
            )
        return made[key]
