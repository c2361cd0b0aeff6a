"""Weight layouts and matmul kernels for inference: fused projections and, on CPU in fp32, the
fastest kernel for each batch shape.

Decode is a matrix-vector product per token (a skinny matrix product for a batch), bound by
how fast the weights stream from memory. Projections that read the same input (q, k and v;
gate and up) run as one matmul over one long matrix. On CPU in fp32 the kernel depends on the
rows of the step (bench/matmul.py has the figures):

- One row (single-stream decode): the sgemv of the BLAS numpy ships (OpenBLAS on Linux and
  Windows), on the dense weights. Inside a decode step its matmuls take ~25% less time than
  oneDNN's matmul (a brgemm kernel at one row); the MKL behind `F.linear` trails both on AMD
  cores. OpenBLAS runs its own threads, so a one-row step keeps torch's pool at one thread
  (`one_row_threads`): two pools spinning on the same cores slow each other down severalfold.
- More rows (batched decode, prefill): oneDNN's matmul, on a copy of the weights packed into
  its blocked layout for batches of about `pack_batch` rows where one was made, else on the
  dense weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fireside.kernels import ggml


@dataclass(frozen=True)
class ServingWeight:
    """The one matrix a group of projections of the same input runs as."""

    dense: Tensor  # [out, in]
    packed: Tensor | None = None  # oneDNN-packed copy of `dense`, for multi-row matmuls
    # `dense` as a numpy array (shared memory) where the CPU kernels apply, else None: made
    # once, because one-row steps call BLAS on it ~50 times per token.
    array: np.ndarray | None = None
    # Quantized weights (fireside.model.quantized): the ggml matrices whose outputs, side by
    # side, are x @ dense.T; `dense` is then a meta tensor giving the shape alone.
    quant: tuple[ggml.QuantMatrix, ...] = ()


def fuse_rows(weights: Sequence[Tensor]) -> Tensor:
    """Stack [out_i, in] weights into one [sum(out_i), in] matrix, and make each weight a view
    of its rows, so the numbers are stored once and state_dict still has every name."""
    fused = torch.cat([w.detach() for w in weights])
    start = 0
    for w in weights:
        w.data = fused[start : start + w.shape[0]]
        start += w.shape[0]
    return fused


def cpu_fp32(device: torch.device, dtype: torch.dtype) -> bool:
    """Where this module's CPU kernels apply; elsewhere (CUDA, bf16) projections run F.linear."""
    return device.type == "cpu" and dtype == torch.float32


def one_row(x: Tensor) -> bool:
    """Whether `x` holds a single token row (single-stream decode), which the CPU fp32 path
    runs with scalar and matrix-vector kernels."""
    return x.numel() == x.shape[-1]


def serving_weight(weights: Sequence[Tensor], pack_batch: int | None) -> ServingWeight:
    """The weights fused in place (no copy), plus, where `pack_batch` asks for it and oneDNN
    serves this device and dtype, a copy packed for batches of about that many rows."""
    dense = fuse_rows(weights) if len(weights) > 1 else weights[0].detach()
    if not cpu_fp32(dense.device, dense.dtype):
        return ServingWeight(dense)
    packed = None
    if pack_batch is not None and torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(dense, pack_batch)
    return ServingWeight(dense, packed, dense.numpy())


def linear(x: Tensor, weight: ServingWeight) -> Tensor:
    """x @ weight.T (inference only)."""
    if weight.quant:
        if len(weight.quant) == 1:
            return weight.quant[0].matmul(x)
        return torch.cat([q.matmul(x) for q in weight.quant], dim=-1)
    dense = weight.dense
    if weight.array is None or torch.is_grad_enabled():
        return F.linear(x, dense)
    if one_row(x):
        # One row: sgemv on numpy's BLAS; the arrays share memory with the tensors. Reshaped
        # on the numpy side, where a reshape costs a fraction of torch's.
        row = x.detach().numpy().reshape(-1)
        return torch.from_numpy(matvec(weight, row).reshape(*x.shape[:-1], -1))
    if weight.packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, weight.packed, None, "none", [], "")
    if torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._linear_pointwise(x, dense, None, "none", [], "")
    return F.linear(x, dense)


def matvec(weight: ServingWeight, row: np.ndarray) -> np.ndarray:
    """`weight @ row` for one row (a 1-D fp32 array, as the one-row decoder in
    fireside/engine/one_row.py keeps its activations): sgemv on numpy's BLAS, or ggml's kernel
    for quantized weights (the tensors share the arrays' memory both ways)."""
    if weight.quant:
        x = torch.from_numpy(row)
        if len(weight.quant) == 1:
            return weight.quant[0].matmul(x).numpy()
        return np.concatenate([q.matmul(x).numpy() for q in weight.quant])
    assert weight.array is not None, "a one-row matvec needs the weight's numpy array"
    return np.dot(weight.array, row)


@contextmanager
def one_row_threads(
    rows: int, device: torch.device, dtype: torch.dtype, kernel_threads: int | None = None
) -> Iterator[None]:
    """Run a model step of `rows` token rows with torch's thread pool sized for it: one thread
    where the step's matmuls run on the BLAS's own threads (one row, CPU fp32), else as it
    was. The count is restored afterwards, so nothing outside the step sees the change.
    `kernel_threads`: what ggml's kernels run the step on (the engine's thread tuner's pick),
    by default the count the step started with."""
    if rows != 1 or not cpu_fp32(device, dtype):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Quantized matmuls and the whole-step graph run on ggml's own threadpool.
        with ggml.step_threads(kernel_threads or threads):
            yield
    finally:
        torch.set_num_threads(threads)
