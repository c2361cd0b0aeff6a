"""One Transformer for the Llama family (Llama, Mistral, Qwen2, Qwen3).

Module names mirror Hugging Face's parameter names (`model.layers.0.self_attn.q_proj.weight`),
so a safetensors checkpoint maps straight into place with no renaming table.

The model knows nothing of serving. Attention takes an optional `KVCache`: the engine passes
one that writes keys and values into its paged blocks and hands back what to attend over;
training and parity tests pass none and get plain causal attention. In the serving layout each
fused projection adds the LoRA updates of the rows whose request names an adapter
(`fireside.model.adapters`; nothing when none does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fireside.errors import CheckpointError
from fireside.model import quantized, serving
from fireside.model.adapters import add_lora
from fireside.model.config import ModelConfig


class KVCache(Protocol):
    """What attention needs from a cache, whatever its layout.

    `update` stores this step's keys and values ([B, T, n_kv_heads, head_dim], token-major as
    they come out of the projection, RoPE applied) for one layer and returns the keys and
    values to attend over ([B, n_kv_heads, S, head_dim], views are fine) with a boolean mask
    [B, 1, T, S] (True = may attend), or None for plain causal attention over exactly the T
    new tokens.
    """

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store this step's keys and values (as `update`) and return the attention of the
        queries `q` ([B, T, n_heads, head_dim], RoPE applied) over the history,
        [B, n_heads, T, head_dim]: the cache may attend over its own layout without first
        handing the history back as one tensor."""
        ...

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]: ...


def attend_via_update(cache: KVCache, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """`KVCache.attend` for a cache that hands its history back through `update`: SDPA over
    it, causal for several new tokens where the cache gives no mask."""
    k_all, v_all, mask = cache.update(layer, k, v)
    return F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k_all,
        v_all,
        attn_mask=mask,
        is_causal=mask is None and q.shape[1] > 1,
        enable_gqa=q.shape[2] != k.shape[2],
    )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if serving.cpu_fp32(x.device, x.dtype):
            if serving.one_row(x) and not torch.is_grad_enabled():
                # One row (single-stream decode): the scale as a Python float, three ops in
                # all. Each op on a one-element tensor costs as much as on the row, and this
                # runs twice per layer per token (decode 4.6% faster, in-process A/B).
                n = float(torch.linalg.vector_norm(x))
                return (x * self.weight).mul_(1 / math.sqrt(n * n / x.shape[-1] + self.eps))
            # The formula below in five ops from one norm: F.rms_norm on CPU runs a dozen, and
            # between two weight streams each costs tens of microseconds on cold caches
            # (single-stream decode 2% faster, in-process A/B).
            n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            return x * torch.rsqrt(n.square().div_(x.shape[-1]).add_(self.eps)) * self.weight
        if x.dtype == torch.float32:
            # The same numbers as the formula below; on CUDA, one fused kernel.
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Normalise in fp32 whatever the activations' dtype, as the reference implementations do.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(cfg: ModelConfig, device: torch.device | None = None) -> Tensor:
    """Inverse frequencies for RoPE, with linear or Llama-3 scaling where the config asks."""
    dim = cfg.head_dim
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    inv_freq = 1.0 / (cfg.rope_theta**exponent)
    scaling = cfg.rope_scaling or {}
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif rope_type == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_ctx = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths are stretched by `factor`, short ones kept, the middle band blended.
        scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
        inv_freq = torch.where(medium, blended, scaled)
    return inv_freq


class RotaryEmbedding(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inv_freq: Tensor
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def reset(self, device: torch.device) -> None:
        """Recompute the buffer on `device` (a model built on the meta device has none)."""
        self.inv_freq = rope_inv_freq(self.cfg, device)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and signed sin, [B, T, 1, D], for `apply_rope` on positions [B, T]."""
        # Angles in fp32 from explicit positions: the engine's sequences sit at arbitrary offsets.
        angles = positions.float()[..., None, None] * self.inv_freq
        cos, sin = angles.cos(), angles.sin()
        return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rope(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """x: [B, T, H, D]. Rotates the two halves (HF's layout, not interleaved): HF's
    `x * cos + cat(-x2, x1) * sin` with the sign folded into the sine once per forward, so
    each layer pays one roll instead of a chunk, a negation and a concatenation."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def _serving_weight(
    projections: Sequence[nn.Module], pack_batch: int | None
) -> serving.ServingWeight:
    """The serving layout of projections of one input: ggml matrices where any is quantized
    (`fireside.model.quantized`), else the fused fp32/bf16 weights."""
    if quantized.any_quantized(projections):
        return quantized.serving_weight(projections)
    weights = [p.weight for p in projections]
    return serving.serving_weight([w for w in weights if isinstance(w, Tensor)], pack_batch)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.sliding_window = cfg.sliding_window
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        # Set by Transformer.fuse_projections: q, k and v as one matrix (and bias), and o.
        self.qkv_weight: serving.ServingWeight | None = None
        self.qkv_bias: Tensor | None = None
        self.o_weight: serving.ServingWeight | None = None

    def fuse(self, pack_batch: int | None) -> None:
        projections = (self.q_proj, self.k_proj, self.v_proj)
        self.qkv_weight = _serving_weight(projections, pack_batch)
        self.o_weight = _serving_weight([self.o_proj], pack_batch)
        biases = [p.bias for p in projections if p.bias is not None]
        if biases:
            self.qkv_bias = serving.fuse_rows(biases)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.qkv_weight is not None:
            qkv = serving.linear(x, self.qkv_weight)
            if self.qkv_bias is not None:
                qkv = qkv + self.qkv_bias
            qkv = add_lora(qkv, x, self.layer, "qkv")
            qkv = qkv.view(B, T, H + 2 * Hkv, D)
            q, k, v = qkv[:, :, :H], qkv[:, :, H : H + Hkv], qkv[:, :, H + Hkv :]
        else:
            q = self.q_proj(x).view(B, T, H, D)
            k = self.k_proj(x).view(B, T, Hkv, D)
            v = self.v_proj(x).view(B, T, Hkv, D)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.qkv_weight is not None and self.q_norm is None:
            # q and k sit side by side in the fused output: rotate both in one pass.
            qk = apply_rope(qkv[:, :, : H + Hkv], cos, sin)
            q, k = qk[:, :, :H], qk[:, :, H:]
        else:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if cache is not None:
            y = cache.attend(self.layer, q, k, v)
        else:
            mask: Tensor | None = None
            if self.sliding_window is not None and self.sliding_window < T:
                i = torch.arange(T, device=x.device)
                dist = i[:, None] - i[None, :]
                mask = (dist >= 0) & (dist < self.sliding_window)
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=mask,
                is_causal=mask is None and T > 1,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
        y = y.transpose(1, 2).reshape(B, T, H * D)
        if self.o_weight is not None:
            return add_lora(serving.linear(y, self.o_weight), y, self.layer, "o")
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.layer = layer
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        # Set by Transformer.fuse_projections: gate and up as one matrix, and down.
        self.gate_up_weight: serving.ServingWeight | None = None
        self.down_weight: serving.ServingWeight | None = None

    def fuse(self, pack_batch: int | None) -> None:
        self.gate_up_weight = _serving_weight([self.gate_proj, self.up_proj], pack_batch)
        self.down_weight = _serving_weight([self.down_proj], pack_batch)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up_weight is None or self.down_weight is None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate_up = add_lora(serving.linear(x, self.gate_up_weight), x, self.layer, "gate_up")
        gate, up = gate_up.chunk(2, dim=-1)
        h = F.silu(gate) * up
        return add_lora(serving.linear(h, self.down_weight), h, self.layer, "down")


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg, layer)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """HF's `model.` prefix: embeddings, blocks and the final norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.lm_head_weight: serving.ServingWeight | None = None  # set by fuse_projections

    def hidden_states(
        self, input_ids: Tensor, positions: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """input_ids, positions: [B, T]. Positions default to 0..T-1 (no cache)."""
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(
                input_ids
            )
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary_emb(positions, x.dtype)
        for block in self.model.layers:
            x = block(x, cos, sin, cache)
        return self.model.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        if self.lm_head_weight is not None:
            return serving.linear(hidden, self.lm_head_weight)
        return self.lm_head(hidden)

    @property
    def fused(self) -> bool:
        return self.lm_head_weight is not None

    @torch.no_grad()
    def fuse_projections(self, pack_batch: int | None = None) -> None:
        """Lay the weights out for serving (`fireside.model.serving`): q/k/v as one matrix,
        gate/up as one, every projection through `serving.linear`.

        The original parameters become views of the fused matrices: nothing is stored twice,
        and state_dict, save and load see the usual names. With `pack_batch` (CPU fp32 only),
        each projection also gets a oneDNN-packed copy laid out for batches of about that many
        rows: faster batched decode, for a second copy of the projection weights. Either way,
        results equal the unfused model's to float rounding. Quantized projections
        (`fireside.model.quantized`) are stacked into one ggml matrix per group where their
        types match, else run side by side; `pack_batch` does not apply to them.
        """
        if self.fused:
            return
        if any(hasattr(m, "base_layer") for m in self.modules()):
            # PEFT's LoRA layers wrap the projection (`base_layer`): the fused matrices would
            # hold the base weights alone and silently drop the adapter.
            raise CheckpointError(
                "this model carries an unmerged LoRA adapter; merge it into the weights first "
                "(`fireside merge`, or merge_and_unload) before laying them out for serving"
            )
        for block in self.model.layers:
            assert isinstance(block, Block)
            block.self_attn.fuse(pack_batch)
            block.mlp.fuse(pack_batch)
        self.lm_head_weight = _serving_weight([self.lm_head], pack_batch)

    def forward(
        self, input_ids: Tensor, positions: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        return self.logits(self.hidden_states(input_ids, positions, cache))

    def init_weights(self, std: float = 0.02) -> None:
        """Random initialisation for a new model; output projections scaled by depth (GPT-2)."""
        out_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=out_std)
            else:
                nn.init.normal_(p, std=std)

    # From the final norm, which stays a plain tensor when the embeddings are quantized.
    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype
