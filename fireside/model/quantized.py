"""Quantized weights in the Transformer: projections, LM head and embeddings held as ggml
matrices (`fireside.kernels.ggml.QuantMatrix`), CPU only.

`attach` puts matrices in place of the fp32 parameters they replace, by HF name
(`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`, `model.embed_tokens.weight`); the
fp32 tensors are dropped, so only the quantized bytes stay resident. A projection becomes a
`QuantLinear` (bias kept in fp32), the embedding a `QuantEmbedding` (rows dequantized on
lookup), and a tied LM head runs its matmul on the embedding's own matrix. Norms, RoPE,
attention, LoRA, the paged KV cache and batching are untouched: `Transformer.fuse_projections`
stacks q/k/v and gate/up into one matrix each where their types match (else runs the parts and
concatenates their outputs), and `serving.linear` calls `QuantMatrix.matmul`, one code path for
any number of rows.

`quantize_model` quantizes a loaded fp32 model in place: "int8" is Q8_0 everywhere; "int4" is
Q4_K (in_features a multiple of 256) or Q4_0 for projections, with the embeddings and the LM
head at Q6_K or Q8_0 as llama.cpp's Q4_K_M keeps them (they matter most for quality).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from fireside.errors import CheckpointError
from fireside.kernels import ggml
from fireside.kernels.ggml import QType, QuantMatrix
from fireside.model import serving

if TYPE_CHECKING:
    from fireside.model.transformer import Transformer

Scheme = Literal["int8", "int4"]
SCHEMES: tuple[Scheme, ...] = ("int8", "int4")
EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


class QuantLinear(nn.Module):
    """x @ W.T (+ bias) with W a QuantMatrix: the stand-in for an nn.Linear whose weight was
    quantized. After fuse_projections its rows live in the fused matrix (`part`)."""

    def __init__(self, matrix: QuantMatrix, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = matrix.in_features, matrix.out_features
        self.matrix: QuantMatrix | None = matrix
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None
        self.part: tuple[QuantMatrix, int, int] | None = None  # (fused matrix, first row, end)

    def forward(self, x: Tensor) -> Tensor:
        if self.matrix is not None:
            y = self.matrix.matmul(x)
        else:
            assert self.part is not None
            fused, start, end = self.part
            y = fused.matmul(x)[..., start:end]
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return repr(self.matrix or (self.part[0] if self.part else None))


class QuantEmbedding(nn.Module):
    """nn.Embedding over a QuantMatrix in the plain layout: rows dequantized as looked up."""

    def __init__(self, matrix: QuantMatrix) -> None:
        super().__init__()
        if not matrix.lookup:
            raise CheckpointError("an embedding's matrix must be made with lookup=True")
        self.num_embeddings, self.embedding_dim = matrix.out_features, matrix.in_features
        self.matrix = matrix

    def forward(self, ids: Tensor) -> Tensor:
        return self.matrix.rows(ids)

    def extra_repr(self) -> str:
        return repr(self.matrix)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in model.modules())


def matrices(model: nn.Module) -> list[QuantMatrix]:
    """Every distinct matrix the model holds (a tied head's once)."""
    seen: dict[int, QuantMatrix] = {}
    for m in model.modules():
        if isinstance(m, QuantLinear):
            for q in (m.matrix, m.part[0] if m.part else None):
                if q is not None:
                    seen[id(q)] = q
        elif isinstance(m, QuantEmbedding):
            seen[id(m.matrix)] = m.matrix
    for w in _serving_weights(model):
        for q in w.quant:
            seen[id(q)] = q
    return list(seen.values())


def _serving_weights(model: nn.Module) -> list[serving.ServingWeight]:
    out = []
    for m in model.modules():
        for attr in ("qkv_weight", "o_weight", "gate_up_weight", "down_weight", "lm_head_weight"):
            w = getattr(m, attr, None)
            if isinstance(w, serving.ServingWeight):
                out.append(w)
    return out


def resident_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes in quantized matrices, bytes in torch parameters and buffers) of the model."""
    quant = sum(q.nbytes for q in matrices(model))
    dense = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return quant, dense


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if not name.endswith(".weight"):
        raise CheckpointError(f"{name!r} is not a weight this model can hold quantized")
    path = name[: -len(".weight")]
    parent_path, _, attr = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path) if parent_path else model
        getattr(parent, attr)
    except AttributeError:
        raise CheckpointError(f"the model has no weight named {name!r}") from None
    return parent, attr


def attach(model: Transformer, weights: Mapping[str, QuantMatrix]) -> None:
    """Put `weights` (HF parameter names -> matrices) in place of the model's fp32 weights, which
    are released. The embedding's matrix must be made with lookup=True; a tied LM head (no
    separate `lm_head.weight` given) runs on the embedding's matrix. Call before
    fuse_projections (the engine fuses when it starts)."""
    if model.fused:
        raise CheckpointError(
            "attach quantized weights before fuse_projections (before the engine starts)"
        )
    if model.device.type != "cpu":
        raise CheckpointError(f"quantized weights run on CPU only, the model is on {model.device}")
    tied = model.config.tie_word_embeddings
    for name, matrix in weights.items():
        parent, attr = _owner(model, name)
        old = getattr(parent, attr)
        if isinstance(old, nn.Embedding):
            if (matrix.out_features, matrix.in_features) != tuple(old.weight.shape):
                raise CheckpointError(
                    f"{name}: the matrix is {matrix.shape}, the model wants {tuple(old.weight.shape)}"
                )
            setattr(parent, attr, QuantEmbedding(matrix))
            if tied and HEAD not in weights:
                setattr(model, "lm_head", QuantLinear(matrix, None))  # noqa: B010 - typed nn.Linear
        elif isinstance(old, (nn.Linear, QuantLinear)):
            if (matrix.out_features, matrix.in_features) != (old.out_features, old.in_features):
                raise CheckpointError(
                    f"{name}: the matrix is {matrix.shape}, the model wants {(old.out_features, old.in_features)}"
                )
            setattr(parent, attr, QuantLinear(matrix, old.bias))
        else:
            raise CheckpointError(
                f"{name!r} belongs to a {type(old).__name__}, which cannot hold a quantized matrix"
            )


def _as_matrix(module: nn.Module) -> QuantMatrix:
    """A projection's matrix; an fp32 nn.Linear in a group with quantized ones becomes an F32
    matrix, so the group runs through one kernel."""
    if isinstance(module, QuantLinear):
        if module.matrix is None:
            raise CheckpointError("this projection is already fused")
        return module.matrix
    assert isinstance(module, nn.Linear)
    w = module.weight.detach().float().contiguous()
    return QuantMatrix.from_blocks(w.numpy().view("uint8"), QType.F32, w.shape[0], w.shape[1])


def any_quantized(modules: Sequence[nn.Module]) -> bool:
    return any(isinstance(m, QuantLinear) for m in modules)


def serving_weight(modules: Sequence[nn.Module]) -> serving.ServingWeight:
    """The ServingWeight of a group of projections of one input, at least one quantized: one
    stacked matrix where the types and layouts match, else the parts side by side. The modules
    then point into the stacked matrix, so its rows are held once."""
    parts = [_as_matrix(m) for m in modules]
    out = sum(p.out_features for p in parts)
    shape = torch.empty(out, parts[0].in_features, device="meta")
    if len(parts) > 1 and QuantMatrix.can_concat(parts):
        fused = QuantMatrix.concat(parts)
        start = 0
        for m, p in zip(modules, parts, strict=True):
            if isinstance(m, QuantLinear):
                m.matrix, m.part = None, (fused, start, start + p.out_features)
            start += p.out_features
        return serving.ServingWeight(shape, quant=(fused,))
    return serving.ServingWeight(shape, quant=tuple(parts))


def _type_for(scheme: Scheme, name: str, in_features: int) -> QType:
    if name in (EMBED, HEAD):
        # llama.cpp's Q4_K_M keeps the output matrix at Q6_K; Q8_0 here measured as good and
        # takes any width divisible by 32.
        return QType.Q8_0 if scheme == "int8" or in_features % 256 else QType.Q6_K
    if scheme == "int8":
        return QType.Q8_0
    return QType.Q4_K if in_features % 256 == 0 else QType.Q4_0


def check_can_quantize(scheme: str, device: str | torch.device) -> None:
    """Refuse `--quantize scheme` on `device` before anything loads: an unknown scheme, CUDA,
    or kernels that are not built here (the reason named)."""
    if scheme not in SCHEMES:
        raise CheckpointError(f"unknown quantization {scheme!r}: use one of {', '.join(SCHEMES)}")
    if torch.device(device).type != "cpu":
        raise CheckpointError(
            f"--quantize {scheme} runs on CPU only (the device is {device}): add --device cpu, "
            "or serve bf16 on the GPU without --quantize"
        )
    reason = ggml.unavailable_reason()
    if reason is not None:
        raise ggml.KernelsUnavailableError(f"--quantize {scheme} needs the ggml kernels: {reason}")


def describe(model: nn.Module, scheme: str, fp32_bytes: int) -> str:
    """The log line of a quantized model: its resident weight memory against fp32's."""
    quant, dense = resident_bytes(model)
    return (
        f"weights quantized to {scheme}: {(quant + dense) / 2**20:.1f} MiB resident "
        f"({quant / 2**20:.1f} MiB in ggml matrices, {dense / 2**20:.1f} MiB in fp32 tensors; "
        f"fp32 took {fp32_bytes / 2**20:.1f} MiB) [{ggml.info()}]"
    )


def quantize_model(model: Transformer, scheme: str, *, head_type: QType | None = None) -> int:
    """Quantize a loaded fp32 CPU model in place ("int8" or "int4"); returns the resident bytes
    of its quantized matrices. Matrices whose width does not divide into 32-value blocks stay
    fp32 (as F32 matrices). `head_type` overrides the type of the LM head and embeddings
    (bench/quant.py measures what keeping them at 8 bits is worth)."""
    check_can_quantize(scheme, model.device)
    if model.fused:
        raise CheckpointError(
            "quantize the model before fuse_projections (before the engine starts)"
        )
    s: Scheme = "int8" if scheme == "int8" else "int4"
    weights: dict[str, QuantMatrix] = {}
    for name, p in model.named_parameters():
        if p.dim() != 2 or not (name.endswith("proj.weight") or name in (EMBED, HEAD)):
            continue
        w = p.detach().float()
        t = _type_for(s, name, w.shape[1])
        if head_type is not None and name in (EMBED, HEAD):
            t = head_type
        if w.shape[1] % 32:
            t = QType.F32
        raw = ggml.quantize_blocks(w, t)
        weights[name] = QuantMatrix.from_blocks(
            raw, t, w.shape[0], w.shape[1], lookup=name == EMBED
        )
    attach(model, weights)
    return sum(q.nbytes for q in matrices(model))
