"""The engine's token logprobs in OpenAI's two shapes: chat `content` and legacy completions."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from fireside.api.schemas import CompletionLogprobs, TokenLogprobOut, TopLogprob
from fireside.engine.types import TokenLogprob
from fireside.model.tokenizer import Tokenizer

# JSON has no -inf; vLLM sends this floor for impossible tokens, and clients expect a number.
LOGPROB_FLOOR = -9999.0


def _clamp(x: float) -> float:
    return x if x > LOGPROB_FLOOR else LOGPROB_FLOOR


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's byte ↔ printable-character table, which byte-level BPE vocabularies are spelt in.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenText:
    """Each token's text and raw bytes (a byte-level token may hold half a UTF-8 character)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.byte_level = type(tokenizer.backend.decoder).__name__ == "ByteLevel"
        self._text: dict[int, str] = {}

    def text(self, token_id: int) -> str:
        found = self._text.get(token_id)
        if found is None:
            found = self._text[token_id] = self.tokenizer.decode([token_id])
        return found

    def bytes(self, token_id: int) -> list[int]:
        piece = self.tokenizer.id_to_token(token_id) or ""
        table = _byte_decoder()
        if self.byte_level and piece and all(c in table for c in piece):
            return [table[c] for c in piece]
        return list(self.text(token_id).encode())


def chat_logprobs(
    names: TokenText, entries: Sequence[TokenLogprob], top_k: int
) -> list[TokenLogprobOut]:
    out = []
    for e in entries:
        top = [
            TopLogprob(token=names.text(t), logprob=_clamp(lp), bytes=names.bytes(t))
            for t, lp in e.top[:top_k]
        ]
        out.append(
            TokenLogprobOut(
                token=names.text(e.token_id),
                logprob=_clamp(e.logprob),
                bytes=names.bytes(e.token_id),
                top_logprobs=top,
            )
        )
    return out


def completion_logprobs(
    names: TokenText,
    entries: Sequence[TokenLogprob | None],
    token_ids: Sequence[int],
    top_k: int,
    text_start: int = 0,
) -> CompletionLogprobs:
    """Legacy shape; an entry of None (the first prompt token) has no logprob, as in OpenAI."""
    result = CompletionLogprobs()
    offset = text_start
    for token_id, e in zip(token_ids, entries, strict=True):
        text = names.text(token_id)
        result.tokens.append(text)
        result.text_offset.append(offset)
        offset += len(text)
        if e is None:
            result.token_logprobs.append(None)
            result.top_logprobs.append(None)
            continue
        result.token_logprobs.append(_clamp(e.logprob))
        top = {names.text(t): _clamp(lp) for t, lp in e.top[:top_k]}
        # The chosen token is always listed, as vLLM and OpenAI do.
        top.setdefault(text, _clamp(e.logprob))
        result.top_logprobs.append(top)
    return result
