"""Streaming detokenization: text deltas that are always whole characters and never leak a stop
string.

Decoding one token at a time breaks in two ways: a multi-byte UTF-8 character split across
tokens decodes to U+FFFD, and tokenizers that drop a word's leading space at the start of a
string lose it. So each delta is the difference between decoding a short window of tokens with
and without the newest ones (the prefix/read offsets of Hugging Face's text-generation-inference
and vLLM), and a delta that ends in U+FFFD waits for the next token. At the end of a stream
the bytes still waiting are decoded as they are, so a reply cut inside a character (by
max_tokens, say) ends in U+FFFD exactly as decoding all its tokens at once would.

Skipping special tokens may keep a few (`keep_special`: a tool format's call markers, which
the caller parses out of the text): the others never reach the text.

Text that could be the start of a stop string is held back until it is clearly not one; once a
stop string appears, the text before it (and the stop string itself only if asked) is the end.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from fireside.model.tokenizer import Tokenizer

# Prompt tokens decoded before the first output token so its leading space survives.
_PROMPT_CONTEXT = 5


class StreamDetokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        *,
        stop: Sequence[str] = (),
        include_stop: bool = False,
        skip_special_tokens: bool = True,
        keep_special: Collection[int] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special_tokens
        self.keep_special = frozenset(keep_special) if skip_special_tokens else frozenset()
        self.stop = [s for s in stop if s]
        self.include_stop = include_stop
        self._ids = list(prompt_ids[-_PROMPT_CONTEXT:])
        self._prefix = 0
        self._read = len(self._ids)
        self.text = ""  # every character decoded so far (output only)
        self._emitted = 0  # characters of `text` already handed out

    def _decode(self, ids: Sequence[int]) -> str:
        if not self.keep_special.intersection(ids):
            return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special)
        # The runs between kept tokens decode skipping the rest; the kept ones as themselves.
        text, run = "", list[int]()
        for i in ids:
            if i in self.keep_special:
                text += self.tokenizer.decode(run, skip_special_tokens=True)
                text += self.tokenizer.decode([i])
                run = []
            else:
                run.append(i)
        return text + self.tokenizer.decode(run, skip_special_tokens=True)

    def _append_token(self, token_id: int) -> None:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)

    def add(self, token_id: int) -> tuple[str, str | None]:
        """Feed one token. Returns the text now safe to emit and the stop string it hit, if any;
        after a hit the stream is over."""
        searched = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self._append_token(token_id)
        if self.stop:
            hits = [(i, s) for s in self.stop if (i := self.text.find(s, searched)) >= 0]
            if hits:
                at, stop = min(hits)
                end = at + len(stop) if self.include_stop else at
                delta = self.text[self._emitted : end]
                self._emitted = end
                return delta, stop
        safe = len(self.text) - self._held_back()
        delta = self.text[self._emitted : safe] if safe > self._emitted else ""
        self._emitted = max(self._emitted, safe)
        return delta, None

    def flush(self) -> str:
        """The rest of the text, at the end of a stream that did not end on a stop string:
        what was held back, and the tokens still waiting for the end of a character."""
        if self._read < len(self._ids):
            before = self._decode(self._ids[self._prefix : self._read])
            after = self._decode(self._ids[self._prefix :])
            self.text += after[len(before) :]
            self._prefix = self._read = len(self._ids)
        delta = self.text[self._emitted :]
        self._emitted = len(self.text)
        return delta

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that a stop string starts with."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest
