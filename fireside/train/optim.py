"""Optimizers and the learning-rate schedule shared by pretraining, SFT and DPO.

Muon (torch.optim.Muon) orthogonalises the update of each 2-D hidden matrix, which trains
transformers' attention and MLP weights faster than AdamW per step; it is defined only for
matrices, so embeddings, the output head, norms and biases stay with AdamW (as in
modded-nanogpt and nanochat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from fireside.train.distributed import unwrap


def split_parameters(
    model: nn.Module,
) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices, other matrices, vectors) among the trainable parameters.

    Hidden matrices are the 2-D weights inside the transformer blocks; the embedding and the
    output head are matrices too, but row lookups and logits are not what Muon is built for.
    """
    hidden: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    vectors: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, p in unwrap(model).named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue  # tied embeddings appear twice
        seen.add(id(p))
        if p.ndim == 2 and ".layers." in f".{name}":
            hidden.append(p)
        elif p.ndim >= 2:
            other.append(p)
        else:
            vectors.append(p)
    return hidden, other, vectors


def build_optimizers(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    *,
    muon: bool = True,
    betas: tuple[float, float] = (0.9, 0.95),
    muon_momentum: float = 0.95,
) -> list[torch.optim.Optimizer]:
    """Muon for hidden matrices and AdamW for the rest, or AdamW for everything (muon=False).

    One `lr` drives both: Muon's `match_rms_adamw` scaling gives its updates the RMS of an
    AdamW update, so the AdamW learning rate carries over. Each group keeps its `base_lr`, which
    `set_lr_multiplier` scales by the schedule. Weight decay applies to matrices, not vectors.
    """
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    hidden, other, vectors = split_parameters(model)
    fused = any(p.is_cuda for p in (*hidden, *other, *vectors))
    optimizers: list[torch.optim.Optimizer] = []
    if muon and hidden:
        muon_opt = torch.optim.Muon(
            hidden,
            lr=lr,
            weight_decay=weight_decay,
            momentum=muon_momentum,
            adjust_lr_fn="match_rms_adamw",
        )
        optimizers.append(muon_opt)
    else:
        other = hidden + other
    groups = [
        {"params": other, "weight_decay": weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if groups:
        optimizers.append(torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, fused=fused))
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def lr_schedule(
    step: int,
    total: int,
    warmup: int,
    *,
    decay: Literal["cosine", "linear", "constant"] = "linear",
    cooldown_frac: float = 0.4,
    final_frac: float = 0.0,
) -> float:
    """The learning-rate multiplier for `step` (0-based): linear warmup, then hold, then decay.

    The decay covers the last `cooldown_frac` of training and ends at `final_frac` of the peak
    (nanochat's warmup-stable-decay shape; cosine decay over the whole run with cooldown_frac=1).
    """
    if total <= 0:
        raise ValueError(f"total steps must be positive, got {total}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    decay_steps = max(1, round(total * cooldown_frac))
    decay_start = max(warmup, total - decay_steps)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    shape = cosine if decay == "cosine" else 1.0 - progress
    return final_frac + (1.0 - final_frac) * shape


def set_lr_multiplier(optimizers: Sequence[torch.optim.Optimizer], multiplier: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * multiplier


def zero_grad(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


def step_all(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    for opt in optimizers:
        opt.step()
