"""The paged KV cache: a fixed pool of blocks, block tables, and prefix reuse by content hash.

Keys and values live in one preallocated tensor per layer, `[num_blocks, block_size, n_kv_heads,
head_dim]`, sized once from a memory budget, so serving never allocates KV memory and never runs
out of it. A sequence owns a list of block ids (its block table); `PagedKV` is the model's
`KVCache` for one forward pass: it writes the step's keys and values into their slots and hands
attention the sequence's blocks gathered in order, with the mask that keeps each query to its
own past.

A full block is named by a hash of its tokens and everything before them, and of the request's
cache salt (through the first block's hash): callers with different salts never share a block,
so nobody learns another's prompt from what is cached. Blocks are
refcounted; a block whose count drops to zero goes back to the free list but keeps its content
and hash until it is handed out again, so a later prompt with the same prefix (a system prompt,
the conversation so far) reuses it instead of recomputing it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fireside.model.config import ModelConfig
from fireside.model.transformer import attend_via_update

# Batched decode attends row by row over views of the pool once the longest row's context
# reaches this many tokens; below it, one gathered, padded copy costs less than a call per row
# (134M model, two threads on a busy machine: 8 rows at 16-80 tokens ran 1.3x slower
# row by row, 16 rows at ~300 tokens 1.8x faster; one thread: level at 20 tokens, 2-10x
# faster from 48 to 144).
ROWS_FROM_CONTEXT = 128


def kv_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Keys and values of every layer for one token."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * itemsize


def block_hash(parent: int | None, tokens: Sequence[int], salt: str | None = None) -> int:
    """A block's identity: its tokens and, through the parent's hash, all tokens before them
    and the salt (which only the first block, having no parent, takes in)."""
    if parent is None and salt is not None:
        return hash((("fireside-cache-salt", salt), tuple(tokens)))
    return hash((parent, tuple(tokens)))


class KVBlockPool:
    """Block storage and bookkeeping: allocation, refcounts, and the prefix-hash index."""

    def __init__(
        self,
        cfg: ModelConfig,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"the KV pool needs at least one block of at least one token "
                f"(got {num_blocks} blocks of {block_size})"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        # Block 0 is scratch: padding tokens write there and no block table points at it.
        shape = (num_blocks + 1, block_size, cfg.num_key_value_heads, cfg.head_dim)
        # Zeros, not empty: stale slots are multiplied by zero attention weights, and
        # uninitialised memory could hold NaN, which survives that multiplication.
        self.keys = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)
        ]
        self.values = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)
        ]
        self.refcount = [0] * (num_blocks + 1)
        # Free blocks in eviction order (oldest first). A free block may still be indexed by
        # hash: handing it out evicts it from the index.
        self._free: OrderedDict[int, None] = OrderedDict(
            (b, None) for b in range(1, num_blocks + 1)
        )
        self._hash_of: dict[int, int] = {}
        self._by_hash: dict[int, int] = {}
        self.prefix_queries = 0
        self.prefix_hits = 0

    # -- accounting ----------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    # -- allocation ----------------------------------------------------------------------

    def allocate(self) -> int:
        if not self._free:
            # The scheduler reserves blocks before admitting a request, so this is a bug.
            raise RuntimeError("KV block pool exhausted despite admission control")
        block, _ = self._free.popitem(last=False)
        old = self._hash_of.pop(block, None)
        if old is not None and self._by_hash.get(old) == block:
            del self._by_hash[old]
        self.refcount[block] = 1
        return block

    def share(self, block: int) -> None:
        if self.refcount[block] == 0:
            del self._free[block]
        self.refcount[block] += 1

    def release(self, blocks: Sequence[int]) -> None:
        for block in blocks:
            self.refcount[block] -= 1
            if self.refcount[block] == 0:
                self._free[block] = None

    def copy_block(self, src: int, dst: int) -> None:
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[dst].copy_(keys[src])
            values[dst].copy_(values[src])

    # -- prefix cache --------------------------------------------------------------------

    def register(self, block: int, h: int) -> None:
        """Index a block whose content is complete; the first block with a hash keeps it."""
        if h not in self._by_hash:
            self._by_hash[h] = block
            self._hash_of[block] = h

    def lookup(self, h: int) -> int | None:
        return self._by_hash.get(h)

    def prefix_hashes(self, tokens: Sequence[int], salt: str | None = None) -> list[int]:
        """The hash of every full block of `tokens` under `salt`."""
        bs = self.block_size
        hashes: list[int] = []
        parent: int | None = None
        for start in range(0, len(tokens) - bs + 1, bs):
            parent = block_hash(parent, tokens[start : start + bs], salt)
            hashes.append(parent)
        return hashes

    def cached_prefix(self, tokens: Sequence[int], salt: str | None = None) -> list[int]:
        """Blocks holding the longest cached prefix of `tokens`, whole blocks only (not yet
        shared). The last token is never matched: its logits must be computed, and it must
        land in a block of its own sequence, not a shared one."""
        matched: list[int] = []
        for h in self.prefix_hashes(tokens, salt)[: (len(tokens) - 1) // self.block_size]:
            block = self.lookup(h)
            if block is None:
                break
            matched.append(block)
        return matched


@dataclass(frozen=True)
class _RowHistory:
    """The keys one decode row attends to: `length` slots of the flat pool from `start` where
    its blocks are consecutive (blocks None), else of its blocks gathered in order."""

    start: int
    length: int
    blocks: Tensor | None = None


@dataclass
class PagedKV:
    """The model's `KVCache` for one forward over a batch `[B, T]`.

    mask: `[B, 1, T, S]`, True where a query may attend, or None for plain causal attention
    over all S keys. Then either slots (`[B*T]` flat slot index, block * block_size + offset,
    for every new token; padding tokens write to the scratch block) and block_tables
    (`[B, max_blocks]`), or span: for a single sequence whose blocks are consecutive ids,
    (first block, tokens), whose history is then a view of the pool written in place, with
    no slots, no table and no gather; or, for a batch of decode rows (T = 1), slots and
    rows: each row's history, which attention reads as a view of the pool, row by row.
    """

    pool: KVBlockPool
    mask: Tensor | None
    slots: Tensor | None = None
    block_tables: Tensor | None = None
    span: tuple[int, int] | None = None
    rows: list[_RowHistory] | None = None

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store this step's keys and values and attend over the history: `[B, H, T, D]`."""
        gqa = q.shape[2] != k.shape[2]
        if self.rows is not None:
            return self._attend_rows(layer, q, k, v, gqa)
        return attend_via_update(self, layer, q, k, v)

    def _attend_rows(self, layer: int, q: Tensor, k: Tensor, v: Tensor, gqa: bool) -> Tensor:
        """Decode rows, each over a view of its own stretch of the pool: no gathered copy of
        the batch's history and no mask, for one small attention call per row (from
        ROWS_FROM_CONTEXT tokens on; a row whose blocks are not consecutive, after a fork or
        a shared prefix, gathers its own)."""
        assert self.rows is not None and self.slots is not None
        B, _, H, D = k.shape
        flat_k = self.pool.keys[layer].view(-1, H, D)
        flat_v = self.pool.values[layer].view(-1, H, D)
        flat_k.index_copy_(0, self.slots, k.reshape(B, H, D))
        flat_v.index_copy_(0, self.slots, v.reshape(B, H, D))
        # Few ops per row, since this runs rows x layers times a step: each row's query as
        # [heads, 1, D] from one unbind, its keys and values as one strided view each.
        queries = q.transpose(1, 2).unbind(0)
        out = []
        # On one thread: each row's attention is too small to split, and a parallel region
        # per call makes every row wait at the pool's barrier (on a busy machine, for a
        # descheduled thread's time slice: 8 rows ran 3.5x slower on two threads).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for query, row in zip(queries, self.rows, strict=True):
                shape, strides = (H, row.length, D), (D, H * D, 1)
                if row.blocks is None:
                    keys = flat_k.as_strided(
                        shape, strides, flat_k.storage_offset() + row.start * H * D
                    )
                    values = flat_v.as_strided(
                        shape, strides, flat_v.storage_offset() + row.start * H * D
                    )
                else:
                    gathered_k = self.pool.keys[layer].index_select(0, row.blocks)
                    gathered_v = self.pool.values[layer].index_select(0, row.blocks)
                    keys = gathered_k.as_strided(shape, strides, row.start * H * D)
                    values = gathered_v.as_strided(shape, strides, row.start * H * D)
                out.append(F.scaled_dot_product_attention(query, keys, values, enable_gqa=gqa))
        finally:
            torch.set_num_threads(threads)
        return torch.stack(out)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        B, T, H, D = k.shape
        flat_k = self.pool.keys[layer].view(-1, H, D)
        flat_v = self.pool.values[layer].view(-1, H, D)
        if self.span is not None:
            # One stretch of the pool holds the whole history, ending with this step's
            # tokens: write them in place and attend over a view of it.
            first, length = self.span
            start = first * self.pool.block_size
            k_all, v_all = flat_k[start : start + length], flat_v[start : start + length]
            k_all[length - T :] = k[0]
            v_all[length - T :] = v[0]
            return k_all[None].transpose(1, 2), v_all[None].transpose(1, 2), self.mask
        assert self.slots is not None and self.block_tables is not None
        flat_k.index_copy_(0, self.slots, k.reshape(B * T, H, D))
        flat_v.index_copy_(0, self.slots, v.reshape(B * T, H, D))
        table = self.block_tables.view(-1)
        S = self.block_tables.shape[1] * self.pool.block_size
        # Token-major blocks make the gathered history [B, S, H, D]; attention reads it
        # through a transposed view, so there is one copy per layer, not two.
        k_all = self.pool.keys[layer].index_select(0, table).view(B, S, H, D).transpose(1, 2)
        v_all = self.pool.values[layer].index_select(0, table).view(B, S, H, D).transpose(1, 2)
        return k_all, v_all, self.mask


def build_batch_cache(
    pool: KVBlockPool,
    block_tables: Sequence[Sequence[int]],
    starts: Sequence[int],
    lengths: Sequence[int],
    sliding_window: int | None,
    device: torch.device,
) -> tuple[PagedKV, Tensor]:
    """The cache and positions `[B, T]` for rows that each add `lengths[i]` tokens at
    position `starts[i]` (T = max length; shorter rows are padded)."""
    only = block_tables[0]
    if len(starts) == 1 and _consecutive(only):
        return _single_span_cache(pool, only[0], starts[0], lengths[0], sliding_window, device)
    if max(lengths) == 1 and max(starts) + 1 >= ROWS_FROM_CONTEXT:
        return _decode_rows_cache(pool, block_tables, starts, sliding_window, device)
    return _padded_cache(pool, block_tables, starts, lengths, sliding_window, device)


def _padded_cache(
    pool: KVBlockPool,
    block_tables: Sequence[Sequence[int]],
    starts: Sequence[int],
    lengths: Sequence[int],
    sliding_window: int | None,
    device: torch.device,
) -> tuple[PagedKV, Tensor]:
    """Any batch (prompt chunks): every row's blocks gathered, padded to the longest table,
    with a mask."""
    bs = pool.block_size
    B, T = len(starts), max(lengths)
    max_blocks = max(len(t) for t in block_tables)
    table = torch.zeros(B, max_blocks, dtype=torch.long)
    for i, t in enumerate(block_tables):
        table[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    start = torch.tensor(starts, dtype=torch.long)[:, None]
    length = torch.tensor(lengths, dtype=torch.long)[:, None]
    offsets = torch.arange(T, dtype=torch.long)[None, :]
    positions = start + offsets  # [B, T]
    valid = offsets < length
    block_idx = (positions // bs).clamp(max=max_blocks - 1)
    slots = table.gather(1, block_idx) * bs + positions % bs
    slots = torch.where(valid, slots, torch.zeros_like(slots))
    mask = _attention_mask(positions, max_blocks * bs, sliding_window)
    # A padding query attends to key 0 only: a fully masked row would produce NaN.
    keys = torch.arange(max_blocks * bs, dtype=torch.long)[None, None, :]
    mask = torch.where(valid[:, :, None], mask, keys == 0)
    cache = PagedKV(
        pool=pool,
        slots=slots.view(-1).to(device),
        block_tables=table.to(device),
        mask=mask[:, None].to(device),
    )
    return cache, positions.clamp(min=0).to(device)


def _consecutive(blocks: Sequence[int]) -> bool:
    return list(blocks) == list(range(blocks[0], blocks[0] + len(blocks)))


def _decode_rows_cache(
    pool: KVBlockPool,
    block_tables: Sequence[Sequence[int]],
    starts: Sequence[int],
    sliding_window: int | None,
    device: torch.device,
) -> tuple[PagedKV, Tensor]:
    """Rows that each add one token at `starts[i]` (batched decode): each attends to its
    tokens up to and including the new one (the last `sliding_window` of them, with one)."""
    bs = pool.block_size
    rows, slots = [], []
    for table, pos in zip(block_tables, starts, strict=True):
        slots.append(table[pos // bs] * bs + pos % bs)
        first = pos + 1 - sliding_window if sliding_window is not None else 0
        first = max(first, 0)
        if _consecutive(table):
            rows.append(_RowHistory(table[0] * bs + first, pos + 1 - first))
        else:
            used = torch.tensor(table[: pos // bs + 1], dtype=torch.long, device=device)
            rows.append(_RowHistory(first, pos + 1 - first, used))
    cache = PagedKV(
        pool=pool,
        mask=None,
        slots=torch.tensor(slots, dtype=torch.long, device=device),
        rows=rows,
    )
    return cache, torch.tensor(starts, dtype=torch.long, device=device)[:, None]


def _single_span_cache(
    pool: KVBlockPool,
    first_block: int,
    start: int,
    length: int,
    sliding_window: int | None,
    device: torch.device,
) -> tuple[PagedKV, Tensor]:
    """One sequence in consecutive blocks (the common single-stream case): attention reads a
    view of exactly its tokens; with no offset or window, that is plain causal attention. Few
    small ops, because in single-stream decode this runs once per token."""
    positions = torch.arange(start, start + length, dtype=torch.long)[None, :]
    total = start + length
    mask = None
    if sliding_window is not None or (length > 1 and start > 0):
        mask = _attention_mask(positions, total, sliding_window)[:, None].to(device)
    cache = PagedKV(
        pool=pool,
        mask=mask,
        span=(first_block, total),
    )
    return cache, positions.to(device)


def _attention_mask(positions: Tensor, num_keys: int, sliding_window: int | None) -> Tensor:
    """[B, T, num_keys]: True where the query at `positions` may attend to the key slot."""
    keys = torch.arange(num_keys, dtype=torch.long)[None, None, :]
    q_pos = positions[:, :, None]
    mask = keys <= q_pos
    if sliding_window is not None:
        mask &= keys > q_pos - sliding_window
    return mask
