"""A GGUF file's tokenizer rebuilt as an HF `tokenizers` object, so fireside.model.tokenizer's
Tokenizer (chat rendering, streaming, grammars) works on it unchanged; and the other way, a
byte-level BPE tokenizer as the GGUF metadata that `fireside export --gguf` writes.

A GGUF carries no tokenizer.json: it keeps the vocabulary (`tokenizer.ggml.tokens`, with token
types and scores), the merges and the *name* of the pre-tokenizer (`tokenizer.ggml.pre`), whose
regular expressions live in llama.cpp's C++ (src/llama-vocab.cpp). The names map here onto the
same splits the models' own tokenizer.json files use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from fireside.errors import TokenizerError

if TYPE_CHECKING:
    from fireside.model.tokenizer import Tokenizer

# gguf.TokenType values (llama.cpp's llama_token_type), spelled out so this module needs only
# the metadata, not the gguf package.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The splits of llama.cpp's pre-tokenizer names, in the spelling of the models' tokenizer.json
# (llama.cpp rewrites `(?i:…)` for its own regex engine; HF `tokenizers` reads the original).
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# llama.cpp's "default": GPT-2's split after punctuation runs, digit runs and digit triples.
_DEFAULT = (
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)
# StarCoder's family: every digit apart, then GPT-2's split.
_STARCODER = (r"\p{N}", _GPT2)


@dataclass(frozen=True)
class PreTokenizer:
    splits: tuple[str, ...]
    ignore_merges: bool = False  # Llama 3's BPE takes a whole piece that is in the vocabulary


_PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"),
        PreTokenizer((_LLAMA3,), ignore_merges=True),
    ),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"), PreTokenizer((_QWEN2,))),
    "qwen35": PreTokenizer((_QWEN35,)),
    **dict.fromkeys(("gpt-4o", "llama4"), PreTokenizer((_GPT4O,))),
    "tekken": PreTokenizer((_TEKKEN,), ignore_merges=True),
    **dict.fromkeys(("gpt-2", "phi-2", "olmo", "mpt"), PreTokenizer((_GPT2,))),
    **dict.fromkeys(("smollm", "starcoder", "refact", "codeshell"), PreTokenizer(_STARCODER)),
    "default": PreTokenizer(_DEFAULT),
}


@dataclass
class GGUFVocab:
    """The tokenizer.* metadata of a GGUF file."""

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    pre: str | None = None
    add_space_prefix: bool = True
    special_ids: dict[str, int] = field(default_factory=dict)  # "bos_token" -> id, ...

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> GGUFVocab:
        model = meta.get("tokenizer.ggml.model")
        tokens = meta.get("tokenizer.ggml.tokens")
        if not model or not tokens:
            raise TokenizerError(
                "the GGUF file has no tokenizer (tokenizer.ggml.model and .tokens)"
            )
        ids = {
            "bos_token": "bos_token_id",
            "eos_token": "eos_token_id",
            "unk_token": "unknown_token_id",
            "pad_token": "padding_token_id",
            "eot_token": "eot_token_id",
            "eom_token": "eom_token_id",
        }
        special_ids = {
            name: int(meta[f"tokenizer.ggml.{key}"])
            for name, key in ids.items()
            if f"tokenizer.ggml.{key}" in meta
            and 0 <= int(meta[f"tokenizer.ggml.{key}"]) < len(tokens)
        }
        return cls(
            model=str(model),
            tokens=[str(t) for t in tokens],
            token_types=[int(t) for t in meta.get("tokenizer.ggml.token_type", [])],
            scores=[float(s) for s in meta.get("tokenizer.ggml.scores", [])],
            merges=[str(m) for m in meta.get("tokenizer.ggml.merges", [])],
            pre=meta.get("tokenizer.ggml.pre"),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
            special_ids=special_ids,
        )

    @property
    def special(self) -> dict[str, str | None]:
        """bos/eos/pad/unk as the texts fireside's Tokenizer keeps."""
        names = ("bos_token", "eos_token", "pad_token", "unk_token")
        return {n: self.tokens[self.special_ids[n]] for n in names if n in self.special_ids}


def build_backend(vocab: GGUFVocab) -> HFTokenizer:
    try:
        return _build_backend(vocab)
    except TokenizerError:
        raise
    except Exception as e:  # the Rust side raises a bare Exception (a merge of unknown tokens)
        raise TokenizerError(f"the GGUF file's vocabulary does not make a tokenizer: {e}") from None


def _build_backend(vocab: GGUFVocab) -> HFTokenizer:
    if vocab.model == "gpt2":
        backend = _byte_level(vocab)
    elif vocab.model == "llama":
        backend = _sentencepiece(vocab)
    else:
        raise TokenizerError(
            f"the GGUF tokenizer model {vocab.model!r} is not supported; "
            "supported: 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)"
        )
    _add_special_tokens(backend, vocab)
    return backend


def _byte_level(vocab: GGUFVocab) -> HFTokenizer:
    pre = _PRE_TOKENIZERS.get(vocab.pre or "default")
    if pre is None:
        raise TokenizerError(
            f"the GGUF file's pre-tokenizer {vocab.pre!r} (tokenizer.ggml.pre) is not one Fireside "
            f"knows; known: {', '.join(sorted(_PRE_TOKENIZERS))}"
        )
    merges = [_merge_pair(m) for m in vocab.merges]
    model = models.BPE(
        {t: i for i, t in enumerate(vocab.tokens)}, merges, ignore_merges=pre.ignore_merges
    )
    backend = HFTokenizer(model)
    backend.pre_tokenizer = _split_pre_tokenizer(pre)
    backend.decoder = decoders.ByteLevel()
    return backend


def _split_pre_tokenizer(pre: PreTokenizer) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in pre.splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


def _merge_pair(merge: str) -> tuple[str, str]:
    left, _, right = merge.partition(" ")
    return left, right


def _sentencepiece(vocab: GGUFVocab) -> HFTokenizer:
    """SentencePiece BPE as llama.cpp runs it: the pair whose merged piece scores highest merges
    first, unknown characters fall back to <0xXX> byte tokens, spaces are ▁ and a space is put
    before the text (and after each special token) unless the file says otherwise."""
    if len(vocab.scores) != len(vocab.tokens):
        raise TokenizerError("the GGUF SentencePiece vocabulary has no scores for its tokens")
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    unk = vocab.special_ids.get("unk_token")
    model = models.BPE(
        ids,
        merges_from_scores(vocab.tokens, vocab.scores),
        unk_token=vocab.tokens[unk] if unk is not None else None,
        fuse_unk=True,
        byte_fallback=True,
    )
    backend = HFTokenizer(model)
    steps: list[normalizers.Normalizer] = [normalizers.Replace(" ", "\u2581")]
    if vocab.add_space_prefix:
        steps.insert(0, normalizers.Prepend("\u2581"))
    backend.normalizer = normalizers.Sequence(steps)
    decode: list[decoders.Decoder] = [
        decoders.Replace("\u2581", " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
    ]
    if vocab.add_space_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(decode)
    return backend


def merges_from_scores(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """BPE merges ranked as SentencePiece ranks them: by the score of the piece they make (the
    same rule as transformers' generate_merges)."""
    ids = {t: i for i, t in enumerate(tokens)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, score in zip(tokens, scores, strict=True):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                ranked.append((-score, ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _add_special_tokens(backend: HFTokenizer, vocab: GGUFVocab) -> None:
    """CONTROL tokens (turn markers, BOS/EOS) become special added tokens and USER_DEFINED ones
    plain added tokens, both matched whole before the text is split, as llama.cpp does."""
    control = {i for i, kind in enumerate(vocab.token_types) if kind in (CONTROL, UNKNOWN)}
    control |= {
        vocab.special_ids[n]
        for n in ("bos_token", "eos_token", "eot_token", "eom_token")
        if n in vocab.special_ids
    }
    special = [vocab.tokens[i] for i in sorted(control) if vocab.tokens[i]]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    user = [vocab.tokens[i] for i, kind in enumerate(vocab.token_types) if kind == USER_DEFINED]
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user if t])


# The names an export may write, most common first: one name of each distinct split (the
# aliases above tokenize alike), all of them names llama.cpp's llama-vocab.cpp knows.
_EXPORT_PRE = ("qwen2", "llama-bpe", "gpt-4o", "tekken", "qwen35", "dbrx", "gpt-2", "starcoder")
# llama.cpp's convert_hf_to_gguf.py tells pre-tokenizers apart by how they tokenize this text
# (its `chktxt`); Fireside checks the split it names on the same text and more.
CHECK_TEXTS = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "def f(x):\n    return x + 1\n\n\nclass A:\r\n\tpass  # done\n",
    "Hello, World! 1234567 naïve café I'VE HAD 12.5% of it... DON'T/won't x=[1,2];y={'a':3}",
    "ÀÉÎõü ǅungla ΣΊΣΥΦΟΣ straße ﬁ ½ ² ⅷ ٣٤ 𝟘𝟙 \u00a0\u2003 \u200b end",
)


def vocab_for_gguf(tokenizer: Tokenizer, vocab_size: int) -> GGUFVocab:
    """A byte-level BPE tokenizer as GGUF metadata, as convert_hf_to_gguf.py's _set_vocab_gpt2
    writes it: every embedding row a token (unused rows [PADn]), added special tokens CONTROL,
    other added tokens USER_DEFINED, and the pre-tokenizer named by the llama.cpp split that
    cuts the check texts exactly as this tokenizer does."""
    data = json.loads(tokenizer.backend.to_str())
    model = data.get("model") or {}
    pre_tok = json.dumps(data.get("pre_tokenizer"))
    byte_level = '"ByteLevel"' in pre_tok or (data.get("decoder") or {}).get("type") == "ByteLevel"
    if model.get("type") != "BPE" or model.get("byte_fallback") or not byte_level:
        raise TokenizerError(
            "GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, Fireside's "
            f"own); this tokenizer's model is {model.get('type')!r}"
            + (" with byte fallback (SentencePiece style)" if model.get("byte_fallback") else "")
        )
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    for token, i in tokenizer.backend.get_vocab(with_added_tokens=True).items():
        tokens[i], types[i] = token, NORMAL
    for i, added in tokenizer.backend.get_added_tokens_decoder().items():
        types[i] = CONTROL if added.special else USER_DEFINED
    found = {name: tokenizer.token_id(text) for name, text in tokenizer.special.items() if text}
    special_ids = {name: i for name, i in found.items() if i is not None}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    vocab = GGUFVocab(
        model="gpt2", tokens=tokens, token_types=types, merges=merges, special_ids=special_ids
    )
    return replace(vocab, pre=llama_cpp_pre(tokenizer, vocab, bool(model.get("ignore_merges"))))


def llama_cpp_pre(tokenizer: Tokenizer, vocab: GGUFVocab, ignore_merges: bool) -> str:
    """The `tokenizer.ggml.pre` name whose split llama.cpp runs the same as this tokenizer's."""
    original = tokenizer.backend.pre_tokenizer
    want = [[p for p, _ in original.pre_tokenize_str(t)] for t in CHECK_TEXTS] if original else []
    for name in _EXPORT_PRE:
        pre = _PRE_TOKENIZERS[name]
        if pre.ignore_merges != ignore_merges or original is None:
            continue
        candidate = _split_pre_tokenizer(pre)
        if [[p for p, _ in candidate.pre_tokenize_str(t)] for t in CHECK_TEXTS] == want:
            break
    else:
        raise TokenizerError(
            "this tokenizer splits text before BPE in a way none of llama.cpp's named "
            f"pre-tokenizers does (tried {', '.join(_EXPORT_PRE)}); llama.cpp would tokenize "
            "it differently. It needs a tokenizer with one of those splits, or the split added "
            "to llama.cpp under a new name (a `tokenizer.ggml.pre` case in src/llama-vocab.cpp "
            "and its hash in convert_hf_to_gguf_update.py), then to Fireside's table in "
            "fireside/model/gguf_tokenizer.py"
        )
    # The whole tokenizer rebuilt from the metadata as a loader will, against the original.
    rebuilt = build_backend(replace(vocab, pre=name))
    for text in (*CHECK_TEXTS, *tokenizer.special_token_texts()):
        if rebuilt.encode(text, add_special_tokens=False).ids != tokenizer.encode(text):
            raise TokenizerError(
                f"the tokenizer rebuilt from GGUF metadata (pre-tokenizer {name!r}) encodes "
                f"{text[:40]!r} differently from the original; it cannot be exported as GGUF"
            )
    return name
