"""Small pieces every training loop shares, so each loop itself stays a readable program.

for step in range(start, total):
    set_lr_multiplier(optimizers, lr_schedule(step, total, warmup))
    for micro in range(accum):
        with accumulation_context(model, micro, accum), autocast(device):
            loss = loss_fn(model, batch)
        (loss / accum).backward()
    grad_norm = clip_and_step(model, optimizers, max_norm)
    progress.update(step + 1, loss=..., tokens=...)
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fireside.model.config import ModelConfig
from fireside.train.optim import step_all, zero_grad

# Dense bf16 peak FLOP/s by device name (tensor cores, no sparsity), for MFU.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Bit-for-bit repeatable kernels (on CPU), so a resumed run retraces the uninterrupted one;
    the previous setting comes back afterwards, as a library should leave global state."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled or before, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; fp32 on CPU, which has no fast bf16 on this class of machine."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accumulation_context(
    model: nn.Module, micro_step: int, accum_steps: int
) -> contextlib.AbstractContextManager[Any]:
    """Under DDP, skip the gradient all-reduce on every micro-step but the last."""
    no_sync = getattr(model, "no_sync", None)
    if no_sync is not None and micro_step < accum_steps - 1:
        return no_sync()
    return contextlib.nullcontext()


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32 (logits [B, T, V], targets [B, T])."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index
    )


def clip_and_step(
    model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], max_norm: float | None
) -> float:
    """Clip gradients (when max_norm is set), step every optimizer, clear gradients.

    Returns the gradient norm before clipping (0.0 when not clipping)."""
    norm = 0.0
    if max_norm:
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        full_tensor = getattr(total, "full_tensor", None)  # FSDP: a DTensor over the shards
        norm = float(full_tensor() if full_tensor is not None else total)
    step_all(optimizers)
    zero_grad(optimizers)
    return norm


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's
    12 * layers * width * context (PaLM appendix B); embeddings are lookups, not matmuls."""
    n = cfg.num_parameters() - cfg.vocab_size * cfg.hidden_size
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6.0 * n + attn


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of a CUDA device, or None where unknown (and on CPU: no MFU there)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


class Progress:
    """A tqdm bar over steps showing loss, tokens/s, MFU (GPU) and the ETA."""

    def __init__(
        self,
        total: int,
        start: int,
        *,
        flops_per_token: float,
        device: torch.device,
        enabled: bool = True,
        desc: str = "train",
    ) -> None:
        self.bar = tqdm(total=total, initial=start, desc=desc, disable=not enabled, unit="step")
        self.flops_per_token = flops_per_token
        self.peak = peak_flops(device)
        self.device = device
        self._last = time.perf_counter()

    def update(self, loss: float, tokens: int) -> dict[str, float]:
        """Advance one step that processed `tokens` tokens; returns tokens/s and MFU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        tok_s = tokens / max(dt, 1e-9)
        # step_s too: a budgeted run (scripts/train_gpu.py) sizes itself from a probe's steps.
        stats = {"tok_per_s": tok_s, "step_s": dt}
        postfix = {"loss": f"{loss:.4f}", "tok/s": f"{tok_s:,.0f}"}
        if self.peak:
            stats["mfu"] = tok_s * self.flops_per_token / self.peak
            postfix["mfu"] = f"{100 * stats['mfu']:.1f}%"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        return stats

    def reset_clock(self) -> None:
        """Exclude evaluation, sampling and checkpointing from the next step's throughput."""
        self._last = time.perf_counter()

    def write(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
