"""The tokenizer: HF `tokenizers` (Rust) for BPE training and encoding, in HF's file format.

A model directory's tokenizer.json + tokenizer_config.json (+ chat_template.jinja) load here
and in `transformers.AutoTokenizer` alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from fireside.errors import TokenizerError
from fireside.model import chat
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
        """Render with the model's chat template; the mask marks the assistant's own tokens."""
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat_template")
        text, spans = chat.render(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            special_tokens=self.special,
            **kwargs,
        )
        enc = self.backend.encode(text, add_special_tokens=False)
        mask = [0] * len(enc.ids)
        for i, (start, end) in enumerate(enc.offsets):
            if end > start and any(s <= start and end <= e for s, e in spans):
                mask[i] = 1
        return Rendered(text=text, ids=list(enc.ids), assistant_mask=mask)


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
