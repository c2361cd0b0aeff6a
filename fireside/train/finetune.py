"""What SFT and DPO share: options, loading the starting model, data files, steps, export.

Both start from an HF-format model directory and end with one in RUN_DIR (or, with LoRA, an
adapter in PEFT's format: `fireside merge` folds it into the base); both resume from
RUN_DIR/checkpoints exactly as pretraining does (the shared checkpoint helpers), refusing a
RUN_DIR that was started with other settings. Under torchrun each process takes every
world_size-th sequence of the global batch, and losses are normalised by the global batch so
the gradient is the one a single process would compute.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fireside.errors import TrainingError
from fireside.model.lora import LoraSettings, add_adapter, has_adapter, save_adapter
from fireside.model.pretrained import Pretrained, load_pretrained
from fireside.train.chat_data import MixtureSampler, parse_weighted_path
from fireside.train.checkpoint import export_hf, load_latest_checkpoint, save_checkpoint
from fireside.train.distributed import Dist, barrier, init_distributed, teardown, wrap_ddp
from fireside.train.loop import Progress, deterministic, flops_per_token, seed_everything
from fireside.train.metrics import MetricsLogger
from fireside.train.optim import build_optimizers


@dataclass
class FinetuneOptions:
    model: Path
    data: list[str]  # FILE or FILE:WEIGHT
    output: Path
    steps: int | None = None  # default: `epochs` passes over the mixture
    epochs: float = 1.0
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: int = 0
    optimizer: str = "auto"  # muon (+AdamW), adamw, or auto: muon on CUDA, adamw on CPU
    max_len: int | None = None  # default: the model's context length
    clip: float = 1.0
    seed: int = 0
    save_every: int = 100
    keep_last: int = 2
    device: str = "auto"
    progress: bool = True
    lora: LoraSettings | None = None  # train a LoRA adapter instead of every weight
    extra: dict[str, Any] = field(default_factory=dict)  # task settings for the fingerprint


def check_options(opts: FinetuneOptions) -> list[tuple[Path, float]]:
    """Options that are wrong whatever the data; returns the (file, weight) pairs."""
    if not opts.data:
        raise TrainingError("no --data given")
    if opts.batch_size < 1 or (opts.steps is not None and opts.steps < 1) or opts.epochs <= 0:
        raise TrainingError("--batch-size, --steps and --epochs must be positive")
    if opts.output.resolve() == opts.model.resolve():
        raise TrainingError(
            f"--output {str(opts.output)!r} is the starting model's directory; "
            "give a new RUN_DIR so the starting model is kept"
        )
    return [parse_weighted_path(spec) for spec in opts.data]


def run(opts: FinetuneOptions, train: Callable[[Dist], None]) -> None:
    """Join torchrun's process group (if any), train deterministically on CPU, leave cleanly."""
    check_options(opts)
    dist = init_distributed(opts.device)
    try:
        if opts.batch_size < dist.world_size:
            raise TrainingError(
                f"--batch-size {opts.batch_size} is smaller than the {dist.world_size} processes: "
                "each process needs at least one sequence a step"
            )
        # Bit-for-bit repeatable on CPU, so a resumed run retraces the uninterrupted one.
        with deterministic(dist.device.type == "cpu"):
            train(dist)
    finally:
        teardown(dist)


def start(
    opts: FinetuneOptions, dist: Dist
) -> tuple[Pretrained, nn.Module, list[tuple[Path, float]]]:
    """Seed everything and load the starting model (fp32 master weights) on this rank's device.

    Returns the bundle, the model that trains (the starting model, or it with a new LoRA
    adapter whose weights alone train) and the data files."""
    files = check_options(opts)
    if opts.lora is not None and opts.optimizer == "muon":
        # Muon orthogonalises whole-matrix updates; a rank-r factor is not what it is built for.
        raise TrainingError("LoRA trains with AdamW: leave --optimizer at auto or adamw")
    if opts.optimizer == "auto":
        opts.optimizer = "muon" if use_muon(opts, dist.device) else "adamw"
    use_muon(opts, dist.device)  # rejects an unknown name
    seed_everything(opts.seed)
    bundle = load_pretrained(opts.model, device=dist.device, dtype=torch.float32)
    model: nn.Module = bundle.model
    if opts.lora is not None:
        model = add_adapter(bundle.model, opts.lora, opts.model.resolve())
    return bundle, model, files


def use_muon(opts: FinetuneOptions, device: torch.device) -> bool:
    """As in pretraining: Muon's bf16 Newton-Schulz is slow on CPUs, so auto means CUDA only."""
    if opts.optimizer not in ("auto", "muon", "adamw"):
        raise TrainingError(f"--optimizer must be auto, muon or adamw, got {opts.optimizer!r}")
    if opts.lora is not None:
        return False
    return opts.optimizer == "muon" or (opts.optimizer == "auto" and device.type == "cuda")


def max_len(opts: FinetuneOptions, bundle: Pretrained) -> int:
    context = bundle.context_length
    if opts.max_len is not None and opts.max_len > context:
        raise TrainingError(
            f"--max-len {opts.max_len} is longer than the model's context {context}"
        )
    return opts.max_len or context


def total_steps(opts: FinetuneOptions, sampler: MixtureSampler) -> int:
    return opts.steps or max(1, math.ceil(opts.epochs * sampler.steps_per_epoch()))


def fingerprint(
    opts: FinetuneOptions, files: list[tuple[Path, float]], task: str, total: int
) -> dict[str, Any]:
    """Settings a resumed run must share with the run it continues (the process count is
    checked by the checkpoint itself)."""
    return {
        "task": task,
        "base_model": str(opts.model.resolve()),
        "data": [[str(path.resolve()), weight] for path, weight in files],
        "batch_size": opts.batch_size,
        "lr": opts.lr,
        "weight_decay": opts.weight_decay,
        "warmup": opts.warmup,
        "optimizer": opts.optimizer,
        "max_len": opts.max_len,
        "seed": opts.seed,
        "total_steps": total,
        **(opts.lora.describe() if opts.lora else {}),
        **opts.extra,
    }


def say(dist: Dist, message: str) -> None:
    """Print once per run (rank 0), to stderr so stdout stays for data."""
    if dist.is_main:
        print(message, file=sys.stderr, flush=True)


def mixture_sampler(
    opts: FinetuneOptions, files: list[tuple[Path, float]], sizes: list[int]
) -> MixtureSampler:
    """Batches drawn from the data files by their weights (sizes: examples per file)."""
    return MixtureSampler(sizes, [w for _, w in files], opts.batch_size, opts.seed)


def pad_id(bundle: Pretrained) -> int:
    tok = bundle.tokenizer
    return tok.token_id(tok.special.get("pad_token") or "") or 0


@dataclass
class TrainingRun:
    """A fine-tuning run once the model is loaded, resumed where the RUN_DIR left off: what
    the loop needs, and the checkpoint and export that end its steps."""

    stage: str
    opts: FinetuneOptions
    dist: Dist
    bundle: Pretrained
    model: nn.Module  # bundle.model, or it with a LoRA adapter
    sampler: MixtureSampler
    total: int  # steps in the whole run
    first: int  # the step to start from (0 for a new run)
    optimizers: list[torch.optim.Optimizer]
    run_fingerprint: dict[str, Any]
    train_model: torch.nn.Module  # the model, DDP-wrapped under torchrun
    logger: MetricsLogger
    progress: Progress

    def checkpoint(self, step: int) -> None:
        """Checkpoint after `step` (1-based) every save_every steps and at the end."""
        if step % self.opts.save_every and step != self.total:
            return
        save_checkpoint(
            self.opts.output,
            model=self.model,
            optimizers=self.optimizers,
            step=step,
            state={"epoch": (step - 1) // self.sampler.steps_per_epoch()},
            keep_last=self.opts.keep_last,
            fingerprint=self.run_fingerprint,
            dist=self.dist,
            trainable_only=has_adapter(self.model),
        )
        self.progress.reset_clock()  # saving is not training: keep it out of tokens/s

    def finish(self) -> None:
        """Write the trained model into RUN_DIR in HF format, or the adapter in PEFT's (rank
        0), then wait for every rank."""
        self.progress.close()
        self.logger.close()
        if self.dist.is_main:
            self.model.eval()
            if has_adapter(self.model):
                save_adapter(self.model, self.opts.output)  # type: ignore[arg-type]
                say(self.dist, f"{self.stage}: LoRA adapter written to {self.opts.output}")
            else:
                model, tok = self.bundle.model, self.bundle.tokenizer
                export_hf(self.opts.output, model, tok, self.bundle.generation_config)
                say(self.dist, f"{self.stage}: model written to {self.opts.output}")
        barrier(self.dist)


def begin_training(
    stage: str,
    opts: FinetuneOptions,
    dist: Dist,
    bundle: Pretrained,
    model: nn.Module,
    files: list[tuple[Path, float]],
    sampler: MixtureSampler,
    limit: int,
) -> TrainingRun:
    """Optimizers, the resume from the latest checkpoint, DDP, metrics and the progress bar.
    `model`: what trains, as `start` returned it."""
    model.train()
    total = total_steps(opts, sampler)
    optimizers = build_optimizers(
        model, opts.lr, opts.weight_decay, muon=use_muon(opts, dist.device)
    )
    run_fingerprint = fingerprint(opts, files, stage, total)
    state = load_latest_checkpoint(
        opts.output, model=model, optimizers=optimizers, fingerprint=run_fingerprint, dist=dist
    )
    first = state["step"] if state else 0
    if first:
        say(dist, f"{stage}: resuming {opts.output} at step {first}/{total}")
    progress = Progress(
        total,
        first,
        flops_per_token=flops_per_token(bundle.model.config, limit),
        device=dist.device,
        enabled=opts.progress and dist.is_main,
        desc=stage,
    )
    return TrainingRun(
        stage=stage,
        opts=opts,
        dist=dist,
        bundle=bundle,
        model=model,
        sampler=sampler,
        total=total,
        first=first,
        optimizers=optimizers,
        run_fingerprint=run_fingerprint,
        train_model=wrap_ddp(model, dist),
        logger=MetricsLogger(opts.output, resume_step=first, enabled=dist.is_main),
        progress=progress,
    )
