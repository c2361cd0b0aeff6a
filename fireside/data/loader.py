"""Document-aligned packing into fixed-length rows, in a seeded order that resumes exactly.

Each row holds seq_len + 1 tokens (inputs and shifted targets). A row starts where a document
starts (its BOS), so the model learns each document from its beginning; documents shorter than a
row are packed together behind it. When the row ends near a document boundary, the few tokens up
to it are skipped so the next row starts on a BOS too; when it ends deep inside a long document
(a source file, a book), the next row carries on from there instead of throwing the rest away.

Order: an epoch is a seeded permutation of all rows. The position is one integer, the number of
batches this rank has taken, and the same on every rank: under torchrun rank r takes global
batches r, r + W, r + 2W, ... so W processes with per-rank batch B see exactly the rows one
process sees with batch B and W accumulation steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fireside.data.shards import Shard, open_split
from fireside.errors import DataError

# Skip at most this fraction of a row to start the next row on a document boundary.
MAX_SKIP_FRACTION = 0.25


def row_starts(tokens: int, doc_starts: np.ndarray, row_len: int) -> np.ndarray:
    """Start offsets of the rows packed from one shard of `tokens` tokens."""
    starts: list[int] = []
    max_skip = int(row_len * MAX_SKIP_FRACTION)
    pos = 0
    while pos + row_len <= tokens:
        starts.append(pos)
        end = pos + row_len
        i = int(np.searchsorted(doc_starts, end))
        next_doc = int(doc_starts[i]) if i < len(doc_starts) else tokens
        pos = next_doc if next_doc - end <= max_skip else end
    return np.asarray(starts, dtype=np.int64)


class PackedLoader:
    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        *,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be positive ({seq_len}, {batch_size})")
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.device = torch.device(device)
        self.shards: list[Shard] = open_split(data_dir, split)
        rows = [
            np.stack([np.full(len(s), i), s], axis=1)
            for i, shard in enumerate(self.shards)
            if len(s := row_starts(len(shard.tokens), shard.doc_starts, seq_len + 1))
        ]
        if not rows:
            total = sum(len(s.tokens) for s in self.shards)
            raise DataError(
                f"the {split!r} split of {str(data_dir)!r} has {total} tokens, not enough for "
                f"one row of seq_len + 1 = {seq_len + 1}: use more data, a shorter --seq-len"
                + (" or a larger `data prepare --val-fraction`" if split == "val" else "")
            )
        self.rows = np.concatenate(rows)  # [n_rows, 2]: (shard, offset)
        self.batches_taken = 0
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_rows)
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
            self._epoch_cache = (epoch, perm)
        return self._epoch_cache[1]

    def _row(self, j: int) -> np.ndarray:
        epoch, k = divmod(j, self.n_rows)
        shard, start = self.rows[self._order(epoch)[k]]
        return np.asarray(self.shards[shard].tokens[start : start + self.seq_len + 1])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each [batch_size, seq_len] int64 on the loader's device."""
        global_batch = self.batches_taken * self.world_size + self.rank
        first = global_batch * self.batch_size
        rows = np.stack([self._row(j) for j in range(first, first + self.batch_size)])
        self.batches_taken += 1
        batch = torch.from_numpy(rows.astype(np.int64))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"batches_taken": self.batches_taken, "seed": self.seed, "n_rows": self.n_rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_rows"] != self.n_rows or state["seed"] != self.seed:
            raise DataError(
                "the data no longer matches the run: it was packed into "
                f"{state['n_rows']} rows with seed {state['seed']}, now {self.n_rows} with seed "
                f"{self.seed}; resume with the data directory and seed the run started with"
            )
        self.batches_taken = int(state["batches_taken"])
