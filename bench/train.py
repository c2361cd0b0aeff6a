"""Training throughput: tokens/s (and MFU on a GPU) of Fireside's pretraining step for a
~100M-parameter model, against a bare PyTorch step on the same model in the same run.

    .venv/bin/python bench/train.py                  # depth 10, vocab 32768: ~92M parameters
    .venv/bin/python bench/train.py --depth 4 --seq-len 256   # a quick look

The baseline is forward + backward + AdamW with nothing else; Fireside's step adds what the
trainer does every step (Muon on CUDA, bf16 autocast on CUDA, gradient accumulation,
clipping, the schedule). Figures are medians over repeats; MFU is reported on CUDA only,
as a CPU has no meaningful tensor-core peak to divide by.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F

from fireside.model import ModelConfig, Transformer
from fireside.train.loop import (
    accumulation_context,
    autocast,
    clip_and_step,
    flops_per_token,
    lm_loss,
    peak_flops,
)
from fireside.train.optim import build_optimizers, lr_schedule, set_lr_multiplier


def fresh_model(cfg: ModelConfig, device: torch.device) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    model.init_weights()
    return model.train()


def compiled(model: Transformer, enabled: bool) -> torch.nn.Module:
    return cast(torch.nn.Module, torch.compile(model)) if enabled else model


def fireside_step(
    cfg: ModelConfig, device: torch.device, batch: torch.Tensor, accum: int, compile: bool
) -> Callable[[], None]:
    raw = fresh_model(cfg, device)
    optimizers = build_optimizers(raw, 3e-3, 0.1, muon=device.type == "cuda")
    model = compiled(raw, compile)
    micro = batch.chunk(accum)
    step = [0]

    def run() -> None:
        set_lr_multiplier(optimizers, lr_schedule(step[0], 1000, 10))
        for i, rows in enumerate(micro):
            with accumulation_context(model, i, accum), autocast(device):
                loss = lm_loss(model(rows[:, :-1]), rows[:, 1:])
            (loss / accum).backward()
        clip_and_step(model, optimizers, 1.0)
        step[0] += 1

    return run


def baseline_step(
    cfg: ModelConfig, device: torch.device, batch: torch.Tensor, compile: bool
) -> Callable[[], None]:
    raw = fresh_model(cfg, device)
    opt = torch.optim.AdamW(raw.parameters(), lr=3e-3)
    model = compiled(raw, compile)

    def run() -> None:
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def measure(run: Callable[[], None], steps: int, repeats: int, device: torch.device) -> float:
    """Median seconds per step after one warm-up step."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--seq-len", type=int, default=None, help="default: 1024 CUDA, 512 CPU")
    parser.add_argument(
        "--batch", type=int, default=None, help="rows a step; default 32 CUDA, 2 CPU"
    )
    parser.add_argument(
        "--accum", type=int, default=1, help="accumulation steps in Fireside's step"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    args = parser.parse_args()

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    seq_len = args.seq_len or (1024 if on_cuda else 512)
    rows = args.batch or (32 if on_cuda else 2)
    cfg = ModelConfig.from_depth(args.depth, args.vocab_size, max_position_embeddings=seq_len)
    batch = torch.randint(0, args.vocab_size, (rows, seq_len + 1), device=device)
    tokens = rows * seq_len
    print(
        f"depth {args.depth}: {cfg.num_parameters() / 1e6:.1f}M parameters, {rows} x {seq_len} "
        f"tokens a step, {device} ({torch.cuda.get_device_name(device) if on_cuda else f'{torch.get_num_threads()} threads'})"
    )
    base = measure(
        baseline_step(cfg, device, batch, args.compile), args.steps, args.repeats, device
    )
    ours = measure(
        fireside_step(cfg, device, batch, args.accum, args.compile),
        args.steps,
        args.repeats,
        device,
    )
    fpt = flops_per_token(cfg, seq_len)
    peak = peak_flops(device)
    for name, sec in (("baseline (fp32 AdamW step)", base), ("fireside pretrain step", ours)):
        line = f"  {name:28} {tokens / sec:12,.0f} tokens/s  {sec * 1000:9.1f} ms/step"
        if peak:
            line += f"  MFU {100 * tokens / sec * fpt / peak:5.1f}%"
        print(line)
    print(f"  fireside / baseline tokens/s: {base / ours:.2f}x")
    if not peak:
        print("  MFU: GPU-only (measured against the device's bf16 tensor-core peak)")


if __name__ == "__main__":
    main()
