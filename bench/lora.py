"""LoRA against full fine-tuning: time per SFT step and memory, on the same model in one run.

    .venv/bin/python bench/lora.py                  # ~34M-parameter Llama, CPU, rank 16
    .venv/bin/python bench/lora.py --layers 4 --steps 3   # a quick look

Both modes take the SFT step `fireside train sft` takes (masked token loss, backward, clip,
AdamW) on the same random weights and batch, with the model as `fireside.train.finetune.start`
makes it: every weight trainable, or a PEFT LoRA adapter on q,k,v,o,gate,up,down.

Time: one process holds both models and alternates their steps (after two warm-up steps
each), so a busy machine's load falls on both alike; medians over the steps.

Memory: each mode in a process of its own, both having imported PEFT. The resident set is
read from /proc: its peak over two steps (VmHWM, reset just before the first) and that peak
less the resident set before it (the training state: gradients, optimizer moments,
activations). Tensors past 128 KiB get mappings of their own, returned when freed: glibc
otherwise keeps freed blocks in its heap and the resident set would count them as held.

Ratios are LoRA / full.
"""

from __future__ import annotations

import argparse
import json
import os
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
MODES = ("full", "lora")


def status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, field
    return int(match.group(1))


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


class Trainer:
    """One mode's model, optimizer and batch; `step` is one SFT step."""

    def __init__(self, args: argparse.Namespace, mode: str) -> None:
        torch.manual_seed(0)
        base = Transformer(config(args))
        base.init_weights()
        self.params = sum(p.numel() for p in base.parameters())
        self.model: torch.nn.Module = base
        if mode == "lora":
            self.model = add_adapter(base, lora_settings(args.rank), "bench")
        self.model.train()
        self.optimizers = build_optimizers(self.model, 1e-4, 0.0, muon=False)
        self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.ids = torch.randint(0, args.vocab, (args.batch, args.seq_len))
        self.mask = torch.ones_like(self.ids)
        self.mask[:, : args.seq_len // 2] = 0  # the prompt half is not a target, as in SFT

    def step(self) -> float:
        start = time.perf_counter()
        nll, n = token_nll(self.model, self.ids, self.mask)
        (nll / n).backward()
        clip_and_step(self.model, self.optimizers, 1.0)
        return time.perf_counter() - start


def memory(args: argparse.Namespace) -> dict[str, float]:
    """One mode's memory, in this process (run with the malloc setting main gives it)."""
    import peft  # noqa: F401 - both modes carry PEFT's (and transformers') memory alike

    trainer = Trainer(args, args.worker)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    for _ in range(2):  # the optimizer's state is made in the first step
        trainer.step()
    peak = status_kib("VmHWM")
    return {
        "params": trainer.params,
        "trainable": trainer.trainable,
        "peak_mib": peak * 1024 / MIB,
        "training_mib": (peak - before) * 1024 / MIB,
    }


def step_times(args: argparse.Namespace) -> dict[str, float]:
    trainers = {mode: Trainer(args, mode) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i in range(args.steps + 2):
        for mode, trainer in trainers.items():
            took = trainer.step()
            if i >= 2:
                times[mode].append(took)
    return {mode: statistics.median(t) for mode, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after two warm-ups")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(memory(args)))
        return

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    results = {}
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--worker", mode],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    for mode, seconds in step_times(args).items():
        results[mode]["step_s"] = seconds
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
