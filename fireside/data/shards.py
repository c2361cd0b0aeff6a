"""Token shards on disk: flat uint16/uint32 arrays read by memory map, plus a manifest.

    DATA_DIR/manifest.json
    DATA_DIR/train/shard-00000.bin    tokens, documents back to back, each opening with BOS
    DATA_DIR/train/shard-00000.idx    int64 offsets where each document starts
    DATA_DIR/val/...                  the held-out split, same layout

uint16 halves the bytes of every read while the vocabulary fits in 65,536 ids; past that,
uint32. The manifest records the tokenizer's hash so training refuses data made with another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fireside.errors import DataError, TokenizerError
from fireside.model.tokenizer import Tokenizer

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend.to_str().encode()).hexdigest()


class ShardWriter:
    """Appends documents to one split's shards, starting a new shard past `shard_tokens`."""

    def __init__(self, directory: Path, dtype: np.dtype[Any], shard_tokens: int) -> None:
        self.directory = directory
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._docs: list[np.ndarray] = []
        self._size = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, ids: list[int]) -> None:
        self._docs.append(np.asarray(ids, dtype=self.dtype))
        self._size += len(ids)
        if self._size >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._docs:
            return
        name = f"shard-{len(self.shards):05d}"
        lengths = np.array([len(d) for d in self._docs], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        np.concatenate(self._docs).tofile(self.directory / f"{name}.bin")
        starts.tofile(self.directory / f"{name}.idx")
        self.shards.append(
            {"file": f"{name}.bin", "tokens": int(lengths.sum()), "documents": len(self._docs)}
        )
        self._docs, self._size = [], 0


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{str(path)!r} not found: DATA_DIR must be the output of `fireside data prepare`"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{str(path)!r} is not valid JSON: {e}") from None
    return manifest


def check_tokenizer(manifest: dict[str, Any], tokenizer: Tokenizer, data_dir: str | Path) -> None:
    if manifest["tokenizer"]["sha256"] != tokenizer_hash(tokenizer):
        raise TokenizerError(
            f"the data in {str(data_dir)!r} was tokenized with a different tokenizer "
            f"({manifest['tokenizer']['vocab_size']} tokens, sha256 "
            f"{manifest['tokenizer']['sha256'][:12]}…) than the one given "
            f"({tokenizer.vocab_size} tokens, sha256 {tokenizer_hash(tokenizer)[:12]}…): "
            "prepare the data again with this tokenizer, or pass the one it was made with"
        )


@dataclass
class Shard:
    tokens: np.ndarray  # memory-mapped, read-only
    doc_starts: np.ndarray


def open_split(data_dir: str | Path, split: str) -> list[Shard]:
    """Memory-map a split's shards (no token is read until used)."""
    manifest = read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise DataError(f"{str(data_dir)!r} has no {split!r} split")
    dtype = np.dtype(manifest["dtype"])
    shards = []
    for entry in manifest["splits"][split]["shards"]:
        path = Path(data_dir) / split / entry["file"]
        index = path.with_suffix(".idx")
        if not path.is_file() or not index.is_file():
            raise DataError(f"shard {str(path)!r} or its index is missing from {str(data_dir)!r}")
        tokens = np.memmap(path, dtype=dtype, mode="r")
        if len(tokens) != entry["tokens"]:
            raise DataError(
                f"shard {str(path)!r} holds {len(tokens)} tokens, the manifest says "
                f"{entry['tokens']}: the data directory is damaged, prepare it again"
            )
        shards.append(Shard(tokens=tokens, doc_starts=np.fromfile(index, dtype=np.int64)))
    return shards
