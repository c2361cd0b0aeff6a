"""The packing loader: document-aligned rows, seeded order, exact resume, DDP sharding."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from fireside.data.loader import PackedLoader, row_starts
from fireside.data.prepare import prepare
from fireside.errors import DataError
from fireside.model import Tokenizer
from tests.conftest import stdlib_texts


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    root = tmp_path_factory.mktemp("loader")
    for i, text in enumerate(stdlib_texts(20)):
        (root / f"m{i}.py").write_text(text)
    # Short documents, so rows pack several of them.
    for i in range(40):
        (root / f"short{i}.txt").write_text(f"note {i}: " + "word " * (i % 7 + 1))
    prepare([root], tokenizer, root / "data", val_fraction=0.1, progress=False)
    return root / "data"


def test_row_starts_align_to_documents() -> None:
    # Documents of 10, 3, 50, 4 tokens; rows of 8.
    docs = np.array([0, 10, 13, 63])
    starts = row_starts(67, docs, 8).tolist()
    # Row 0 ends at 8, 2 tokens before the document at 10: skip to it. Row 1 [10, 18) ends 5
    # tokens into the long document: rows carry on through it, then realign at 63.
    assert starts[:3] == [0, 10, 18]
    assert 63 not in starts or all(s <= 63 for s in starts)
    for a, b in itertools.pairwise(starts):
        assert b >= a + 8 and (b == a + 8 or b in docs.tolist())
    assert starts[-1] + 8 <= 67


def test_rows_start_on_bos_and_targets_shift(data_dir: Path, tokenizer: Tokenizer) -> None:
    loader = PackedLoader(data_dir, "train", seq_len=32, batch_size=4, seed=0)
    for _ in range(10):
        x, y = loader.next_batch()
        assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
    shard = loader.shards[0]
    docs = set(shard.doc_starts.tolist())
    aligned = [int(off) for _, off in loader.rows if int(off) in docs]
    assert all(shard.tokens[off] == tokenizer.bos_id for off in aligned)
    # A row opens a document or carries on exactly where a long document's previous row ended.
    offsets = sorted(int(off) for _, off in loader.rows)
    assert all(b in docs or b == a + 33 for a, b in itertools.pairwise(offsets))
    assert len(aligned) > 10
    assert loader.n_rows * 33 >= 0.75 * len(shard.tokens)  # few tokens skipped to align


def test_order_is_seeded_and_resumes(data_dir: Path) -> None:
    a = PackedLoader(data_dir, "train", seq_len=32, batch_size=4, seed=0)
    batches = [a.next_batch()[0] for _ in range(6)]
    b = PackedLoader(data_dir, "train", seq_len=32, batch_size=4, seed=0)
    for _ in range(3):
        b.next_batch()
    c = PackedLoader(data_dir, "train", seq_len=32, batch_size=4, seed=0)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(c.next_batch()[0], batches[i]) for i in range(3, 6))
    other = PackedLoader(data_dir, "train", seq_len=32, batch_size=4, seed=1)
    assert not torch.equal(other.next_batch()[0], batches[0])
    with pytest.raises(DataError, match="seed"):
        other.load_state_dict(b.state_dict())


def test_epochs_cover_every_row_once(data_dir: Path) -> None:
    loader = PackedLoader(data_dir, "train", seq_len=32, batch_size=1, seed=0)
    first = [loader._row(j).tobytes() for j in range(loader.n_rows)]
    second = [loader._row(j).tobytes() for j in range(loader.n_rows, 2 * loader.n_rows)]
    assert sorted(first) == sorted(second) and first != second


def test_ranks_split_the_single_process_order(data_dir: Path) -> None:
    single = PackedLoader(data_dir, "train", seq_len=16, batch_size=2, seed=0)
    ranks = [
        PackedLoader(data_dir, "train", seq_len=16, batch_size=2, seed=0, rank=r, world_size=2)
        for r in range(2)
    ]
    for _ in range(4):
        for r in range(2):
            assert torch.equal(ranks[r].next_batch()[0], single.next_batch()[0])


def test_too_little_data(data_dir: Path) -> None:
    with pytest.raises(DataError, match="not enough for one row"):
        PackedLoader(data_dir, "val", seq_len=1_000_000, batch_size=1)
