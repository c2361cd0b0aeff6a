"""The tokenizer: HF `tokenizers` (Rust) for BPE training and encoding, in HF's file format.

A model directory's tokenizer.json + tokenizer_config.json (+ chat_template.jinja) load here
and in `transformers.AutoTokenizer` alike.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from fireside.errors import TokenizerError
from fireside.model import answers, chat
from fireside.model.checkpoint import write_json

BOS = "<|endoftext|>"
END = "<|end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [
    BOS,
    END,
    PAD,
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|tool_call|>",
    "<|/tool_call|>",
]
# GPT-4's split pattern with every digit its own token (as Llama 1/2 and SentencePiece digit
# splitting do): a small model copies and computes numbers digit by digit, so `246` must not
# become `24`,`6` in one place and `2`,`46` in another.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s+"""
)


@dataclass
class Rendered:
    """A rendered conversation: token ids, and 1 where the assistant produced the token."""

    text: str
    ids: list[int]
    assistant_mask: list[int]


class Tokenizer:
    def __init__(
        self,
        backend: HFTokenizer,
        chat_template: str | None = None,
        special: Mapping[str, str | None] | None = None,
    ) -> None:
        self.backend = backend
        self.chat_template = chat_template
        self.special: dict[str, str | None] = dict(special or {})
        self._plain: HFTokenizer | None = None  # the backend that reads special tokens as text
        self._special_texts: tuple[str, ...] | None = None  # asked on every render and request

    # -- loading and saving --------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise TokenizerError(
                f"{str(file)!r} not found: the model directory needs a tokenizer.json"
            )
        try:
            backend = HFTokenizer.from_file(str(file))
        except Exception as e:  # the Rust side raises a bare Exception on malformed JSON
            raise TokenizerError(f"{str(file)!r} is not a valid tokenizer: {e}") from None
        config: dict[str, Any] = {}
        if (path / "tokenizer_config.json").is_file():
            config = json.loads((path / "tokenizer_config.json").read_text())
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        special = {
            key: _token_text(config.get(key))
            for key in ("bos_token", "eos_token", "pad_token", "unk_token")
        }
        return cls(backend, template, special)

    def save(self, path: str | Path) -> None:
        """tokenizer.json, tokenizer_config.json and chat_template.jinja as transformers 5 writes them."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 1_000_000,
            "clean_up_tokenization_spaces": False,
            **{k: v for k, v in self.special.items() if v is not None},
        }
        if self.chat_template:
            # transformers 4 reads it from here; transformers 5 prefers chat_template.jinja.
            config["chat_template"] = self.chat_template
            (path / "chat_template.jinja").write_text(self.chat_template)
        write_json(path / "tokenizer_config.json", config)

    # -- encoding ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def token_id(self, token: str) -> int | None:
        found = self.backend.token_to_id(token)
        return None if found is None else int(found)

    @property
    def bos_id(self) -> int | None:
        bos = self.special.get("bos_token")
        return self.token_id(bos) if bos else None

    @property
    def eos_id(self) -> int | None:
        eos = self.special.get("eos_token")
        return self.token_id(eos) if eos else None

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def encode_plain(self, text: str) -> list[int]:
        """`text` with any special token's text in it read as plain text, never as the token:
        for text from outside (documents, users) that must not become control tokens."""
        return list(self._plain_backend().encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [
            list(e.ids) for e in self.backend.encode_batch(list(texts), add_special_tokens=False)
        ]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    # -- chat ----------------------------------------------------------------------------

    def render_chat(
        self,
        messages: Sequence[chat.Message],
        *,
        add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> Rendered:
        """Render with the model's chat template; the mask marks the assistant's own tokens.

        Only the template's own text becomes control tokens: a special token's text inside a
        message or a tool (a user's, a search snippet's, a tool's output) is encoded as the
        ordinary text it is, so nobody can forge a turn or a tool call by typing one."""
        template = self._template()
        guard = _ContentGuard(self.special_token_texts())
        text, spans = chat.render(
            template,
            guard.protect(messages),
            add_generation_prompt=add_generation_prompt,
            tools=guard.protect(tools) if tools else tools,
            special_tokens=self.special,
            **kwargs,
        )
        return self._encode(guard, text, spans)

    def render_answers(
        self,
        messages: Sequence[chat.Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        last_only: bool = False,
    ) -> list[Rendered]:
        """The conversation as training sequences, each mask marking the assistant's answers
        as rendering turn by turn finds them (`fireside.model.answers`): any template, with
        `{% generation %}` blocks or without. Usually one sequence; `last_only`: the final
        answer alone."""
        template = self._template()
        guard = _ContentGuard(self.special_token_texts())
        found = answers.find_answers(
            template,
            guard.protect(messages),
            tools=guard.protect(tools) if tools else tools,
            special_tokens=self.special,
            end_tokens=self.special_token_texts(),
            last_only=last_only,
        )
        return [self._encode(guard, f.text, f.spans) for f in found]

    def _template(self) -> str:
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat_template")
        return self.chat_template

    def _encode(
        self, guard: _ContentGuard, text: str, spans: Sequence[tuple[int, int]]
    ) -> Rendered:
        """Token ids of a rendered text; the mask marks tokens wholly inside `spans`."""
        ids: list[int] = []
        mask: list[int] = []
        for start, piece, forged in guard.pieces(text):
            if forged is None:
                enc = self.backend.encode(piece, add_special_tokens=False)
                offsets = [(start + a, start + b) for a, b in enc.offsets]
            else:
                enc = self._plain_backend().encode(forged, add_special_tokens=False)
                offsets = [(start, start + len(piece))] * len(enc.ids)
            ids.extend(enc.ids)
            for a, b in offsets:
                mask.append(int(b > a and any(s <= a and b <= e for s, e in spans)))
        return Rendered(text=guard.restore(text), ids=ids, assistant_mask=mask)

    def special_token_texts(self) -> tuple[str, ...]:
        """The texts of the added tokens marked special (turn markers, tool-call brackets)."""
        if self._special_texts is None:
            added = self.backend.get_added_tokens_decoder().values()
            self._special_texts = tuple(t.content for t in added if t.special and t.content)
        return self._special_texts

    def _plain_backend(self) -> HFTokenizer:
        if self._plain is None:
            # A copy, not a flag flipped on the shared one: encoding runs in many threads.
            plain = HFTokenizer.from_str(self.backend.to_str())
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain


class _ContentGuard:
    """Swaps the special tokens' texts in message content for markers no one can guess (a
    random nonce per render) before the template runs, and finds them in its output after.

    Content is untouched unless it holds such a text, so ordinary prompts tokenize exactly as
    transformers tokenizes them (and the prefix cache sees the same ids)."""

    def __init__(self, specials: Sequence[str]) -> None:
        nonce = secrets.token_hex(8)
        self.left, self.right = f"[fireside-{nonce}-", "]"
        ordered = sorted(set(specials), key=len, reverse=True)
        self.find = re.compile("|".join(re.escape(t) for t in ordered)) if ordered else None
        self.marker = re.compile(re.escape(self.left) + r"(\d+)" + re.escape(self.right))
        self.forged: list[str] = []

    def protect(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.find.sub(self._mark, value) if self.find is not None else value
        if isinstance(value, Mapping):
            return {k: self.protect(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.protect(v) for v in value]
        return value

    def _mark(self, match: re.Match[str]) -> str:
        self.forged.append(match.group(0))
        return f"{self.left}{len(self.forged) - 1}{self.right}"

    def pieces(self, text: str) -> Iterable[tuple[int, str, str | None]]:
        """(start, piece, the forged token's text or None for the template's own text)."""
        at = 0
        for m in self.marker.finditer(text) if self.forged else ():
            index = int(m.group(1))
            if index >= len(self.forged):
                continue
            if m.start() > at:
                yield at, text[at : m.start()], None
            yield m.start(), m.group(0), self.forged[index]
            at = m.end()
        if at < len(text) or not text:
            yield at, text[at:], None

    def restore(self, text: str) -> str:
        if not self.forged:
            return text
        return self.marker.sub(
            lambda m: (
                self.forged[int(m.group(1))] if int(m.group(1)) < len(self.forged) else m.group(0)
            ),
            text,
        )


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json spells a special token as a string or an AddedToken dict.
    if isinstance(value, dict):
        return str(value.get("content"))
    return None if value is None else str(value)


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE with Fireside's special tokens and chat template."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs at least "
            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(
        backend,
        chat_template=chat.FIRESIDE_CHAT_TEMPLATE,
        special={"bos_token": BOS, "eos_token": END, "pad_token": PAD},
    )
