"""Batched decode attends over each row's blocks in place (kv_cache.PagedKV rows): the same
logits as a plain forward over each whole sequence, for rows of different lengths, in
consecutive or scattered blocks, with and without a sliding window."""

from __future__ import annotations

import pytest
import torch

from fireside.engine import kv_cache
from fireside.engine.kv_cache import KVBlockPool, build_batch_cache
from tests.engine_utils import plain_copy, tiny_model

CPU = torch.device("cpu")


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("by_rows", [True, False], ids=["rows", "padded"])
def test_decode_rows_equal_whole_sequence_forwards(
    window: int | None, by_rows: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short contexts: rows mode from the first token, or never, so both paths are checked.
    monkeypatch.setattr(kv_cache, "ROWS_FROM_CONTEXT", 1 if by_rows else 10**9)
    arch = "MistralForCausalLM" if window else "LlamaForCausalLM"
    model = tiny_model(97, sliding_window=window, architecture=arch)
    reference = plain_copy(model)
    model.fuse_projections()
    pool = KVBlockPool(model.config, 16, 4, model.device, model.dtype)
    g = torch.Generator().manual_seed(3)
    # Lengths across block boundaries; the second and fourth rows' blocks are scattered.
    tables = [[1, 2], [9, 3, 12], [4], [15, 6, 7, 5]]
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (5, 9, 2, 13)]
    nxt = [int(t) for t in torch.randint(0, 97, (4,), generator=g)]
    with torch.inference_mode():
        for table, prompt in zip(tables, prompts, strict=True):
            cache, positions = build_batch_cache(pool, [table], [0], [len(prompt)], window, CPU)
            model.hidden_states(torch.tensor([prompt]), positions, cache)
        starts = [len(p) for p in prompts]
        cache, positions = build_batch_cache(pool, tables, starts, [1] * 4, window, CPU)
        if by_rows:
            assert cache.rows is not None and cache.mask is None  # no gather, no mask
            assert [r.blocks is None for r in cache.rows] == [True, False, True, False]
        else:
            assert cache.rows is None and cache.mask is not None
        got = model(torch.tensor(nxt)[:, None], positions, cache)[:, 0]
        want = torch.stack(
            [reference(torch.tensor([[*p, t]]))[0, -1] for p, t in zip(prompts, nxt, strict=True)]
        )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
