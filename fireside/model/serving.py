"""Weight layouts for inference: fused projections and, on CPU, oneDNN-packed weights.

Decode is a matrix-vector product per token (a skinny matrix product for a batch), bound by
how fast the weights stream from memory. Projections that read the same input (q, k and v;
gate and up) run as one matmul over one long matrix. On CPU in fp32 every projection goes
through oneDNN's matmul: it streams the weights at close to the machine's read bandwidth for
one token, where the MKL sgemm behind `F.linear` falls well short on AMD cores and on short
batches (bench/matmul.py has the figures). Packing a weight into oneDNN's blocked layout
speeds batched decode up further; an engine that owns its model then drops the dense copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def fuse_rows(weights: Sequence[Tensor]) -> Tensor:
    """Stack [out_i, in] weights into one [sum(out_i), in] matrix, and make each weight a view
    of its rows, so the numbers are stored once and state_dict still has every name."""
    fused = torch.cat([w.detach() for w in weights])
    start = 0
    for w in weights:
        w.data = fused[start : start + w.shape[0]]
        start += w.shape[0]
    return fused


def serving_weight(
    weights: Sequence[Tensor], pack_batch: int | None, drop_dense: bool = False
) -> Tensor:
    """The one matrix a group of projections of the same input runs as: a oneDNN-packed copy
    laid out for batches of about `pack_batch` rows where that is possible and asked for, else
    the weights fused in place (no copy). `drop_dense` empties the weights a packed copy
    replaces, at once, so the whole model never exists twice."""
    if pack_batch is not None and _onednn(weights[0]):
        packed = torch.ops.mkldnn._reorder_linear_weight(
            torch.cat([w.detach() for w in weights]), pack_batch
        )
        if drop_dense:
            for w in weights:
                w.data = w.new_empty(0)
        return packed
    return fuse_rows(weights) if len(weights) > 1 else weights[0].detach()


def linear(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weight.T for a [out, in] weight from `serving_weight` (inference only)."""
    if weight.is_mkldnn or (_onednn(weight) and not torch.is_grad_enabled()):
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return F.linear(x, weight)


def _onednn(weight: Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    )
