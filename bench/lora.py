"""LoRA against full fine-tuning: time per SFT step and memory, on the same model in one run.

    .venv/bin/python bench/lora.py                  # ~35M-parameter Llama, CPU, rank 16
    .venv/bin/python bench/lora.py --layers 4 --steps 3   # a quick look

Each mode runs in its own process on the same random model and batch, through the SFT step
`fireside train sft` takes (masked token loss, backward, clip, AdamW) with the model as
`fireside.train.finetune.start` makes it: every weight trainable, or a PEFT LoRA adapter on
q,k,v,o,gate,up,down. Memory is the process's resident set, read from /proc: its peak
during training (VmHWM, reset just before the first step) and that peak less the resident
set before it (the training state: gradients, optimizer moments, activations). Times are
medians over steps after a warm-up step. Ratios are LoRA / full.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fireside.model import ModelConfig, Transformer
from fireside.model.lora import add_adapter, lora_settings
from fireside.train.loop import clip_and_step
from fireside.train.losses import token_nll
from fireside.train.optim import build_optimizers

MIB = 2**20


def status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, field
    return int(match.group(1))


def reset_peak() -> None:
    # Writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one.
    Path("/proc/self/clear_refs").write_text("5")


def config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 128,
        head_dim=64,
        max_position_embeddings=args.seq_len,
        architecture="LlamaForCausalLM",
    )


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One mode's measurements, in this process."""
    torch.manual_seed(0)
    base = Transformer(config(args))
    base.init_weights()
    params = sum(p.numel() for p in base.parameters())
    model: torch.nn.Module = base
    if args.worker == "lora":
        model = add_adapter(base, lora_settings(args.rank), "bench")
    model.train()
    optimizers = build_optimizers(model, 1e-4, 0.0, muon=False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len))
    mask = torch.ones_like(ids)
    mask[:, : args.seq_len // 2] = 0  # the prompt half is not a target, as in SFT
    rss_before = status_kib("VmRSS")
    reset_peak()
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        nll, n = token_nll(model, ids, mask)
        (nll / n).backward()
        clip_and_step(model, optimizers, 1.0)
        times.append(time.perf_counter() - start)
    return {
        "params": params,
        "trainable": trainable,
        "step_s": statistics.median(times[1:]),
        "rss_before_mib": rss_before * 1024 / MIB,
        "peak_mib": status_kib("VmHWM") * 1024 / MIB,
        "training_mib": (status_kib("VmHWM") - rss_before) * 1024 / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    results = {}
    for mode in ("full", "lora"):
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--worker", mode],
            check=True,
            capture_output=True,
            text=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    full, lora = results["full"], results["lora"]
    print(
        f"model: {full['params'] / 1e6:.1f}M parameters, batch {args.batch} x {args.seq_len} "
        f"tokens, CPU, {args.threads} threads, LoRA rank {args.rank} on q,k,v,o,gate,up,down"
    )
    print(f"{'':6} {'trainable':>12} {'s/step':>8} {'peak RSS MiB':>13} {'training MiB':>13}")
    for mode, r in results.items():
        print(
            f"{mode:6} {r['trainable'] / 1e6:>11.2f}M {r['step_s']:>8.3f} "
            f"{r['peak_mib']:>13.0f} {r['training_mib']:>13.0f}"
        )
    print(
        f"LoRA / full: time per step {lora['step_s'] / full['step_s']:.2f}x, "
        f"peak RSS {lora['peak_mib'] / full['peak_mib']:.2f}x, "
        f"training memory {lora['training_mib'] / full['training_mib']:.2f}x, "
        f"trainable parameters {lora['trainable'] / full['trainable']:.4f}x"
    )


if __name__ == "__main__":
    main()
