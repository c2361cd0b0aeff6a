"""Validation bits per byte: a loss that compares models whatever their tokenizers.

bpb = (sum of token negative log-likelihoods in nats) / (ln 2 x UTF-8 bytes of the text).
Each document starts from the beginning-of-text token (where the tokenizer has one) so every
one of its tokens is predicted exactly once; a document longer than the context is scored in
consecutive windows.
"""

from __future__ import annotations

import lzma
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fireside.errors import DataError
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer


class EvalDataError(DataError):
    """Held-out text that cannot be evaluated: missing, unreadable or empty."""


@dataclass
class BPBResult:
    bits_per_byte: float
    nats_per_token: float
    tokens: int
    bytes: int
    documents: int


@dataclass
class TextBPB:
    """One held-out file scored by the model and, as the baseline to beat, by `xz -9e`."""

    path: str
    model: BPBResult
    xz_bits_per_byte: float


def xz_bits_per_byte(text: str) -> float:
    """Compressed bits per byte with LZMA at its strongest preset (`xz -9e`): a model that
    cannot beat a general-purpose compressor has learned less than a dictionary coder."""
    data = text.encode("utf-8")
    packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    return 8 * len(packed) / max(len(data), 1)


def read_texts(paths: Sequence[str | Path]) -> list[str]:
    """Each file, or each file under a directory, is one document of UTF-8 text."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise EvalDataError(f"{str(p)!r} does not exist")
    texts = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EvalDataError(f"{str(f)!r} is not readable UTF-8 text: {e}") from None
        if text.strip():
            texts.append(text)
    if not texts:
        raise EvalDataError(f"no text to evaluate in {', '.join(map(str, paths))}")
    return texts


def tokenize_documents(
    tokenizer: Tokenizer, texts: Iterable[str]
) -> Iterator[tuple[list[int], int]]:
    """(ids with BOS first, UTF-8 byte count) per document."""
    bos = tokenizer.bos_id
    for text in texts:
        ids = tokenizer.encode(text)
        yield ([bos, *ids] if bos is not None else ids), len(text.encode("utf-8"))


def data_dir_documents(
    data_dir: str | Path, tokenizer: Tokenizer, max_tokens: int | None = None
) -> Iterator[tuple[list[int], int]]:
    """The held-out split of a `fireside data prepare` directory: documents as stored (BOS
    first), their bytes recovered by decoding, which byte-level BPE does losslessly."""
    from fireside.data.shards import check_tokenizer, open_split, read_manifest

    check_tokenizer(read_manifest(data_dir), tokenizer, data_dir)
    seen = 0
    for shard in open_split(data_dir, "val"):
        ends = [*shard.doc_starts[1:].tolist(), len(shard.tokens)]
        for start, end in zip(shard.doc_starts.tolist(), ends, strict=True):
            ids = shard.tokens[start:end].tolist()
            body = ids[1:] if ids and ids[0] == tokenizer.bos_id else ids
            yield ids, len(tokenizer.decode(body).encode("utf-8"))
            seen += len(ids)
            if max_tokens is not None and seen >= max_tokens:
                return


def windows(ids: list[int], context: int) -> Iterator[tuple[list[int], list[int]]]:
    """(inputs, targets) pairs covering ids[1:] exactly once, each at most `context` long."""
    for start in range(0, len(ids) - 1, context):
        chunk = ids[start : start + context + 1]
        yield chunk[:-1], chunk[1:]


@torch.inference_mode()
def bits_per_byte(
    model: Transformer,
    documents: Iterable[tuple[list[int], int]],
    batch_size: int = 8,
    context: int | None = None,
) -> BPBResult:
    context = context or model.config.max_position_embeddings
    nats, n_tokens, n_bytes, n_docs = 0.0, 0, 0, 0
    batch: list[tuple[list[int], list[int]]] = []

    def flush() -> float:
        width = max(len(x) for x, _ in batch)
        inputs = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (x, y) in enumerate(batch):
            inputs[i, : len(x)] = torch.tensor(x)
            targets[i, : len(y)] = torch.tensor(y)
        logits = model(inputs.to(model.device)).float()
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.to(model.device).reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        batch.clear()
        return float(loss)

    for ids, size in documents:
        if len(ids) < 2:
            continue
        n_docs += 1
        n_bytes += size
        for x, y in windows(ids, context):
            n_tokens += len(y)
            batch.append((x, y))
            if len(batch) == batch_size:
                nats += flush()
    if batch:
        nats += flush()
    if n_bytes == 0:
        raise EvalDataError("no document had a token to predict")
    return BPBResult(
        bits_per_byte=nats / (math.log(2) * n_bytes),
        nats_per_token=nats / n_tokens,
        tokens=n_tokens,
        bytes=n_bytes,
        documents=n_docs,
    )
