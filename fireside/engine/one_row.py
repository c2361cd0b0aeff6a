"""Single-stream decode (one token row, CPU fp32) as a few dozen numpy calls per layer.

A decode step of one row streams every weight once through matrix-vector products on numpy's
BLAS (`fireside.model.serving`); what sits between them is small: norms, RoPE, attention over
one query, SwiGLU. In torch each of those ~80 ops per layer costs 3-10 us of dispatch on CPU,
more than the arithmetic, and on a small model (the bundled one: 7 layers, hidden 448) that
overhead rivals the time the weights take to stream. numpy's ufuncs on arrays this size cost
about a microsecond each, so this module runs the step's arithmetic on numpy views of the
model's own tensors (no copy of any weight, nothing allocated per step beyond the
activations) and writes keys and values straight into the paged pool.

The numbers are the model's (`Transformer.forward`) to float rounding: the same formulas in
the same order, fp32 throughout. It covers the Llama family as the model does (GQA, Qwen2's
q/k/v bias, Qwen3's per-head norms, a sliding window, RoPE scaling through the model's own
inverse frequencies), with dense fp32 weights (numpy's BLAS) or quantized ones (ggml's
kernels, `ServingWeight.quant`); a step with a LoRA adapter runs the torch path instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fireside.engine.kv_cache import KVBlockPool
from fireside.kernels import ggml
from fireside.kernels.step import GraphStep, StepLayer
from fireside.model import serving
from fireside.model.transformer import Block, Transformer


@dataclass(frozen=True)
class _Layer:
    in_norm: np.ndarray
    post_norm: np.ndarray
    qkv: serving.ServingWeight
    qkv_bias: np.ndarray | None
    q_norm: np.ndarray | None
    k_norm: np.ndarray | None
    o: serving.ServingWeight
    gate_up: serving.ServingWeight
    down: serving.ServingWeight
    keys: np.ndarray  # the pool's [slots, n_kv_heads, head_dim], a view
    values: np.ndarray


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class OneRowDecoder:
    """Runs one decode step of one sequence on `model` (fused, CPU fp32) over `pool`."""

    def __init__(self, model: Transformer, pool: KVBlockPool) -> None:
        cfg = model.config
        self.cfg = cfg
        self.pool = pool
        self.H, self.Hkv, self.D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.eps = cfg.rms_norm_eps
        self.window = cfg.sliding_window
        self.embed_tokens = model.model.embed_tokens
        self._token = torch.zeros(1, dtype=torch.long)
        self.norm = _np(model.model.norm.weight)
        self.inv_freq = _np(model.model.rotary_emb.inv_freq).astype(np.float32)
        assert model.lm_head_weight is not None
        self.lm_head = model.lm_head_weight
        slots = (pool.num_blocks + 1) * pool.block_size
        self.layers: list[_Layer] = []
        for i, block in enumerate(model.model.layers):
            assert isinstance(block, Block)
            attn, mlp = block.self_attn, block.mlp
            assert attn.qkv_weight is not None and attn.o_weight is not None
            assert mlp.gate_up_weight is not None and mlp.down_weight is not None
            self.layers.append(
                _Layer(
                    in_norm=_np(block.input_layernorm.weight),
                    post_norm=_np(block.post_attention_layernorm.weight),
                    qkv=attn.qkv_weight,
                    qkv_bias=None if attn.qkv_bias is None else _np(attn.qkv_bias),
                    q_norm=None if attn.q_norm is None else _np(attn.q_norm.weight),
                    k_norm=None if attn.k_norm is None else _np(attn.k_norm.weight),
                    o=attn.o_weight,
                    gate_up=mlp.gate_up_weight,
                    down=mlp.down_weight,
                    keys=_np(pool.keys[i]).reshape(slots, self.Hkv, self.D),
                    values=_np(pool.values[i]).reshape(slots, self.Hkv, self.D),
                )
            )

        self.graph = self._graph_step(model, slots)

    def _graph_step(self, model: Transformer, slots: int) -> GraphStep | None:
        """The whole step as one ggml graph (fireside.kernels.step) where the kernels are built
        and every weight is one matrix ggml can read (quantized, or fp32 wrapped where it lies);
        None leaves the step to numpy."""
        if not ggml.available():
            return None

        def matrix(w: serving.ServingWeight) -> ggml.QuantMatrix | None:
            if len(w.quant) == 1:
                return w.quant[0]
            if not w.quant and w.array is not None and w.array.flags.c_contiguous:
                return ggml.QuantMatrix.wrap_f32(w.array)
            return None

        head = matrix(self.lm_head)
        layers = []
        for layer in self.layers:
            mats = [matrix(w) for w in (layer.qkv, layer.o, layer.gate_up, layer.down)]
            if head is None or any(m is None for m in mats):
                return None
            qkv, o, gate_up, down = (m for m in mats if m is not None)
            layers.append(
                StepLayer(
                    qkv,
                    o,
                    gate_up,
                    down,
                    layer.in_norm,
                    layer.post_norm,
                    layer.q_norm,
                    layer.k_norm,
                    layer.qkv_bias,
                    layer.keys,
                    layer.values,
                )
            )
        assert head is not None
        return GraphStep(
            layers,
            n_heads=self.H,
            n_kv_heads=self.Hkv,
            head_dim=self.D,
            eps=self.eps,
            rope_theta=model.config.rope_theta,
            inv_freq=self.inv_freq,
            slots=slots,
            final_norm=self.norm,
            head=head,
        )

    @staticmethod
    def applies(model: Transformer) -> bool:
        """Whether this decoder can run `model`: fused for serving, CPU fp32, every weight a
        dense matrix numpy can multiply or a quantized one ggml can."""
        if not model.fused or not serving.cpu_fp32(model.device, model.dtype):
            return False
        weights = [model.lm_head_weight]
        for block in model.model.layers:
            assert isinstance(block, Block)
            attn, mlp = block.self_attn, block.mlp
            weights += [attn.qkv_weight, attn.o_weight, mlp.gate_up_weight, mlp.down_weight]
        return all(w is not None and (w.array is not None or bool(w.quant)) for w in weights)

    def _rms_norm(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        scale = 1.0 / math.sqrt(float(np.dot(x, x)) / x.shape[-1] + self.eps)
        h = x * weight
        h *= scale
        return h

    def decode(self, token: int, position: int, blocks: Sequence[int]) -> torch.Tensor:
        """Logits `[1, vocab]` for `token` at `position` of the sequence stored in `blocks`
        (positions before it already cached); its key and value are written to the pool."""
        H, Hkv, D = self.H, self.Hkv, self.D
        G, half = H // Hkv, D // 2
        bs = self.pool.block_size
        slot = blocks[position // bs] * bs + position % bs
        length = position + 1
        first = length - self.window if self.window is not None and length > self.window else 0
        # Where the history is one stretch of the pool (consecutive blocks, the usual single
        # stream), attention reads a view of it; otherwise the blocks are gathered.
        consecutive = blocks[-1] - blocks[0] == len(blocks) - 1 and all(
            b - a == 1 for a, b in itertools.pairwise(blocks)
        )
        start = blocks[0] * bs
        table = None if consecutive else np.asarray(blocks, dtype=np.int64)

        if self.graph is not None and table is None:
            self._token[0] = token
            x = self.embed_tokens(self._token).numpy().reshape(-1)
            logits = self.graph.step(x, position, start + first, length - first)
            return torch.from_numpy(logits)[None]

        angles = np.float32(position) * self.inv_freq
        cos, sin = np.cos(angles), np.sin(angles)
        cos2 = np.concatenate((cos, cos))
        sin2 = np.stack((-sin, sin))  # [2, D/2]: the signed sine of each half
        scale = np.float32(1.0 / math.sqrt(D))

        # The lookup through the module, as every forward of the model starts: its hooks see
        # each step (tests hold the engine there), for a few microseconds.
        self._token[0] = token
        x = self.embed_tokens(self._token).numpy().reshape(-1)
        with np.errstate(over="ignore"):  # exp(-g) of a very negative gate: silu -> -0
            for layer in self.layers:
                h = self._rms_norm(x, layer.in_norm)
                qkv = serving.matvec(layer.qkv, h)
                if layer.qkv_bias is not None:
                    qkv += layer.qkv_bias
                qk = qkv[: (H + Hkv) * D].reshape(H + Hkv, D)
                if layer.q_norm is not None and layer.k_norm is not None:
                    ms = np.einsum("ij,ij->i", qk, qk)
                    ms /= D
                    ms += self.eps
                    qk /= np.sqrt(ms)[:, None]
                    qk[:H] *= layer.q_norm
                    qk[H:] *= layer.k_norm
                rotated = qk.reshape(H + Hkv, 2, half)[:, ::-1] * sin2
                qk *= cos2
                qk += rotated.reshape(H + Hkv, D)
                layer.keys[slot] = qk[H:]
                layer.values[slot] = qkv[(H + Hkv) * D :].reshape(Hkv, D)
                if table is None:
                    keys = layer.keys[start + first : start + length]
                    values = layer.values[start + first : start + length]
                else:
                    keys = layer.keys.reshape(-1, bs, Hkv, D)[table].reshape(-1, Hkv, D)
                    values = layer.values.reshape(-1, bs, Hkv, D)[table].reshape(-1, Hkv, D)
                    keys, values = keys[first:length], values[first:length]
                q = qk[:H].reshape(Hkv, G, D) * scale
                scores = np.matmul(q, keys.transpose(1, 2, 0))  # [Hkv, G, S]
                scores -= scores.max(axis=-1, keepdims=True)
                probs = np.exp(scores, out=scores)
                probs /= probs.sum(axis=-1, keepdims=True)
                y = np.matmul(probs, values.transpose(1, 0, 2)).reshape(H * D)
                x += serving.matvec(layer.o, y)
                h = self._rms_norm(x, layer.post_norm)
                gate_up = serving.matvec(layer.gate_up, h)
                gate, up = gate_up[: gate_up.shape[0] // 2], gate_up[gate_up.shape[0] // 2 :]
                act = np.exp(-gate)
                act += 1.0
                np.divide(gate, act, out=act)
                act *= up
                x += serving.matvec(layer.down, act)
        logits = serving.matvec(self.lm_head, self._rms_norm(x, self.norm))
        return torch.from_numpy(logits)[None]
