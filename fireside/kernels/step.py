"""A whole decode step of one sequence as one ggml graph (fireside_ggml.c's `fs_ggml_stepper`).

The one-row decoder (fireside/engine/one_row.py) streams a step's weights through a matmul per
matrix with numpy's small ops between. On a small model the calls cost as much as the weights
take to read: each wakes ggml's threadpool (or OpenBLAS's), and each norm, rotation or softmax
costs Python a microsecond or more. `GraphStep` hands ggml the whole step (every layer, the
final norm, the head) in one call; the threads wake once and meet at a barrier between nodes.
Weights are used where they lie: quantized matrices as loaded, fp32 ones wrapped over the
model's own memory; keys and values go straight into the engine's paged pool.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from fireside.kernels import ggml


@dataclass(frozen=True)
class StepLayer:
    """One layer's weights and its slice of the KV pool ([slots, kv heads, head_dim] views)."""

    qkv: ggml.QuantMatrix
    o: ggml.QuantMatrix
    gate_up: ggml.QuantMatrix
    down: ggml.QuantMatrix
    in_norm: np.ndarray
    post_norm: np.ndarray
    q_norm: np.ndarray | None
    k_norm: np.ndarray | None
    qkv_bias: np.ndarray | None
    keys: np.ndarray
    values: np.ndarray


def _ptr(a: np.ndarray | None) -> int | None:
    if a is None:
        return None
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise ValueError(f"the step graph reads C-contiguous float32 arrays, got {a.dtype}")
    return int(a.ctypes.data)


class GraphStep:
    """Logits of one token of one sequence, computed by one ggml graph."""

    def __init__(
        self,
        layers: list[StepLayer],
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        eps: float,
        rope_theta: float,
        inv_freq: np.ndarray,
        slots: int,
        final_norm: np.ndarray,
        head: ggml.QuantMatrix,
    ) -> None:
        lib = ggml._need()
        self._lib = lib
        # ggml divides its own RoPE angle (theta^(-2i/d) per position) by these: the model's
        # angle, whatever scaling its inverse frequencies carry.
        plain = rope_theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        self._freq_factors = (plain / inv_freq.astype(np.float64)).astype(np.float32)
        self._keep = (layers, final_norm, head)  # everything the library reads
        self.vocab = head.out_features
        hidden = head.in_features
        inter = layers[0].down.in_features
        self._handle = lib.fs_ggml_stepper_new(
            len(layers),
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            inter,
            eps,
            rope_theta,
            _ptr(self._freq_factors),
            slots,
            _ptr(final_norm),
            head._handle,
        )
        if not self._handle:
            raise ValueError(ggml._error(lib))
        for i, layer in enumerate(layers):
            for kv in (layer.keys, layer.values):
                if kv.shape != (slots, n_kv_heads, head_dim):
                    raise ValueError(f"layer {i}: the KV pool view is {kv.shape}")
            if lib.fs_ggml_stepper_layer(
                self._handle,
                i,
                layer.qkv._handle,
                layer.o._handle,
                layer.gate_up._handle,
                layer.down._handle,
                _ptr(layer.in_norm),
                _ptr(layer.post_norm),
                _ptr(layer.q_norm),
                _ptr(layer.k_norm),
                _ptr(layer.qkv_bias),
                _ptr(layer.keys),
                _ptr(layer.values),
            ):
                raise ValueError(ggml._error(lib))

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.fs_ggml_stepper_free(handle)
            self._handle = None

    def step(self, x: np.ndarray, position: int, first: int, length: int) -> np.ndarray:
        """Logits [vocab] for the token whose embedding is `x` at `position`; its key and value
        go to pool slot first + length - 1, and it attends over slots [first, first + length)."""
        logits = np.empty(self.vocab, dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._lib.fs_ggml_stepper_step(
            self._handle,
            x.ctypes.data,
            ctypes.c_int32(position),
            first + length - 1,
            first,
            length,
            logits.ctypes.data,
            ggml.threads(),
        ):
            raise RuntimeError(f"ggml step failed: {ggml._error(self._lib)}")
        return logits
