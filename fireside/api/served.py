"""The model an app serves: engine, tokenizer and names, bundled once it has loaded."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fireside.api.logprobs import TokenText
from fireside.engine.types import EngineClient
from fireside.model.tokenizer import Tokenizer

if TYPE_CHECKING:
    from llguidance import LLTokenizer

    from fireside.model.adapters import AdapterRegistry


@dataclass
class ServedModel:
    engine: EngineClient
    tokenizer: Tokenizer
    name: str
    eos_token_ids: list[int]
    vocab_size: int  # the model's logits width (may exceed the tokenizer's vocabulary)
    root: str | None = None
    tools: bool = False  # trained with Fireside's built-in tools ("fireside_tools": true)
    created: int = field(default_factory=lambda: int(time.time()))
    close: Callable[[], Awaitable[None]] | None = None
    adapters: AdapterRegistry | None = None  # LoRA adapters served beside it, by name
    # The chat app's model versions: the adapter requests for `name` (or no model) run, and
    # the version's name that answers report (fireside.app.versions switches both).
    default_adapter: str | None = None
    version: str | None = None
    _grammar_tokenizer: LLTokenizer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.token_text = TokenText(self.tokenizer)

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    @property
    def label(self) -> str:
        """The served version as the chat app's messages name it: `tiny@v2`; the base
        version (or a server without versions) is the model's own name."""
        if self.version is None or self.version == "base":
            return self.name
        return f"{self.name}@{self.version}"

    def model_for(self, asked: str | None) -> tuple[str, str | None]:
        """The name a response reports and the adapter to run with, for a request's `model`:
        the base's name (or none) runs the served version (the base, or its default adapter);
        an adapter's name runs that adapter."""
        if asked is None or asked == self.name:
            return self.name, self.default_adapter
        if self.adapters is not None and self.adapters.get(asked) is not None:
            return asked, asked
        return self.name, None

    def grammar_tokenizer(self) -> LLTokenizer:
        """llguidance's view of the vocabulary; built on first use (about 1 s for 150k tokens)."""
        with self._lock:
            if self._grammar_tokenizer is None:
                from fireside.engine.grammar import grammar_tokenizer

                self._grammar_tokenizer = grammar_tokenizer(
                    self.tokenizer, self.eos_token_ids, self.vocab_size
                )
            return self._grammar_tokenizer
