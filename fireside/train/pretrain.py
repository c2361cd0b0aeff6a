"""`fireside train pretrain`: a GPT-style model from token shards, resumable to the bit.

One dial, --depth, derives the model (width, heads, MLP) and a batch size; the rest has
defaults that suit it. Running the same command on an existing RUN_DIR resumes from its last
checkpoint: weights, optimizer moments, schedule position, RNG and data position.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fireside.data.loader import PackedLoader
from fireside.data.shards import check_tokenizer, read_manifest
from fireside.errors import TrainingError
from fireside.model.config import ModelConfig
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer
from fireside.train import distributed
from fireside.train.checkpoint import (
    checkpoint_dirs,
    export_hf,
    full_model,
    load_latest_checkpoint,
    save_checkpoint,
)
from fireside.train.evaluate import evaluate, sample, token_byte_lengths
from fireside.train.loop import (
    Progress,
    accumulation_context,
    autocast,
    clip_and_step,
    deterministic,
    flops_per_token,
    lm_loss,
    seed_everything,
)
from fireside.train.metrics import MetricsLogger
from fireside.train.optim import build_optimizers, lr_schedule, set_lr_multiplier

SAMPLE_PROMPTS = ("The meaning of", "def main(")


@dataclass
class PretrainConfig:
    data: Path
    tokenizer: Path
    output: Path
    depth: int
    steps: int | None = None
    tokens: int | None = None
    seq_len: int = 1024
    batch_tokens: int | None = None  # tokens per optimizer step, all ranks; None: from depth
    device_batch: int | None = None  # rows per forward pass on one device; None: from device
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int | None = None
    cooldown_frac: float = 0.4
    grad_clip: float = 1.0
    optimizer: str = "auto"  # muon (+AdamW), adamw, or auto: muon on CUDA, adamw on CPU
    seed: int = 0
    eval_every: int = 250
    eval_tokens: int = 2**20
    sample_every: int = 1000
    save_every: int = 500
    keep_last: int = 3
    device: str = "auto"
    compile: bool = False  # torch.compile the model: fewer kernel launches, the way to high MFU
    fsdp: bool = False  # shard weights, gradients and optimizer state across ranks (torchrun)
    progress: bool = True


def batch_tokens_for_depth(depth: int) -> int:
    """nanochat trains depth 20 on 2^19 tokens a step; smaller models take smaller batches
    (a power of two near 4096 * depth^2), which keeps a short run from being a handful of steps."""
    return int(min(2**19, 2 ** round(math.log2(4096 * depth**2))))


def padded_vocab(vocab_size: int) -> int:
    # Embedding rows padded to a multiple of 64 keep the output matmul on fast tensor-core shapes.
    return 64 * math.ceil(vocab_size / 64)


@dataclass(frozen=True)
class Plan:
    """Everything derived from the config: the numbers the run actually uses."""

    model: ModelConfig
    device_batch: int
    accum_steps: int
    batch_tokens: int
    total_steps: int
    warmup: int
    on_cuda: bool


def use_muon(cfg: PretrainConfig, plan: Plan) -> bool:
    """Muon's Newton-Schulz iterations run in bf16, which CPUs without native bf16 compute
    several times slower than fp32, so CPU runs default to AdamW alone."""
    if cfg.optimizer not in ("auto", "muon", "adamw"):
        raise TrainingError(f"--optimizer must be auto, muon or adamw, got {cfg.optimizer!r}")
    if cfg.fsdp:
        if cfg.optimizer == "muon":
            raise TrainingError(
                "--optimizer muon cannot run with --fsdp: Muon orthogonalises whole matrices and "
                "FSDP splits them across ranks; use --optimizer adamw (or auto)"
            )
        return False
    return cfg.optimizer == "muon" or (cfg.optimizer == "auto" and plan.on_cuda)


def plan_run(cfg: PretrainConfig, vocab_size: int, world_size: int, on_cuda: bool) -> Plan:
    if cfg.depth < 1:
        raise TrainingError(f"--depth must be at least 1, got {cfg.depth}")
    if cfg.seq_len < 8:
        raise TrainingError(f"--seq-len must be at least 8, got {cfg.seq_len}")
    if cfg.steps is not None and cfg.tokens is not None:
        raise TrainingError("give --steps or --tokens, not both")
    model = ModelConfig.from_depth(
        cfg.depth, padded_vocab(vocab_size), max_position_embeddings=cfg.seq_len
    )
    device_batch = cfg.device_batch or max(1, (32768 if on_cuda else 4096) // cfg.seq_len)
    wanted = cfg.batch_tokens or batch_tokens_for_depth(cfg.depth)
    per_pass = device_batch * cfg.seq_len * world_size
    accum = max(1, round(wanted / per_pass))
    batch_tokens = accum * per_pass
    if cfg.steps is not None:
        total = cfg.steps
    elif cfg.tokens is not None:
        total = math.ceil(cfg.tokens / batch_tokens)
    else:
        # Chinchilla's 20 tokens per parameter, the compute-optimal default.
        total = math.ceil(20 * model.num_parameters() / batch_tokens)
    if total < 1:
        raise TrainingError(f"the run must train at least one step, got {total}")
    warmup = cfg.warmup if cfg.warmup is not None else min(100, max(1, total // 50))
    return Plan(model, device_batch, accum, batch_tokens, total, warmup, on_cuda)


def run_fingerprint(cfg: PretrainConfig, plan: Plan, manifest: dict[str, Any]) -> dict[str, Any]:
    """The settings a resume must share with the run it continues (model config aside)."""
    return {
        "seq_len": cfg.seq_len,
        "device_batch": plan.device_batch,
        "batch_tokens": plan.batch_tokens,
        "total_steps": plan.total_steps,
        "warmup": plan.warmup,
        "cooldown_frac": cfg.cooldown_frac,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "grad_clip": cfg.grad_clip,
        "optimizer": "muon" if use_muon(cfg, plan) else "adamw",
        "seed": cfg.seed,
        "data_tokens": manifest["splits"]["train"]["tokens"],
        "tokenizer_sha256": manifest["tokenizer"]["sha256"],
    }


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train (or resume) and export the HF model into cfg.output; returns a summary."""
    dist = distributed.init_distributed(cfg.device)
    try:
        with deterministic(dist.device.type == "cpu"):
            return _pretrain(cfg, dist)
    finally:
        distributed.teardown(dist)


def _pretrain(cfg: PretrainConfig, dist: distributed.Dist) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------
    tokenizer = Tokenizer.from_dir(cfg.tokenizer)
    manifest = read_manifest(cfg.data)
    check_tokenizer(manifest, tokenizer, cfg.data)
    plan = plan_run(cfg, tokenizer.vocab_size, dist.world_size, dist.device.type == "cuda")
    device = dist.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    seed_everything(cfg.seed)  # the same initial weights on every rank

    model = Transformer(plan.model).to(device)
    model.init_weights()
    if cfg.fsdp:
        if not dist.enabled:
            raise TrainingError("--fsdp shards across processes: launch with torchrun")
        distributed.shard_fsdp(model, dist)  # before the optimizers, which see the shards
    optimizers = build_optimizers(model, cfg.lr, cfg.weight_decay, muon=use_muon(cfg, plan))
    loader = PackedLoader(
        cfg.data,
        "train",
        seq_len=cfg.seq_len,
        batch_size=plan.device_batch,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=cfg.seed,
        device=device,
    )
    val_loader = PackedLoader(
        cfg.data,
        "val",
        seq_len=cfg.seq_len,
        batch_size=plan.device_batch,
        rank=dist.rank,
        world_size=dist.world_size,
        shuffle=False,
        device=device,
    )
    val_batches = max(
        1,
        min(
            cfg.eval_tokens // (plan.device_batch * cfg.seq_len * dist.world_size),
            val_loader.n_rows // (plan.device_batch * dist.world_size),
        ),
    )
    token_bytes = token_byte_lengths(tokenizer, plan.model.vocab_size)
    fingerprint = run_fingerprint(cfg, plan, manifest)

    if (cfg.output / "config.json").is_file() and not checkpoint_dirs(cfg.output):
        raise TrainingError(
            f"{str(cfg.output)!r} holds a model but no pretraining checkpoints: it is not a "
            "pretraining RUN_DIR to resume; give a new --output directory"
        )
    cfg.output.mkdir(parents=True, exist_ok=True)
    state = load_latest_checkpoint(
        cfg.output, model=model, optimizers=optimizers, fingerprint=fingerprint, dist=dist
    )
    start = 0
    if state is not None:
        start = int(state["step"])
        loader.load_state_dict(state["loader"])
        if dist.is_main:
            print(f"resuming {cfg.output} from step {start} of {plan.total_steps}")
    elif dist.is_main:
        print(
            f"pretraining depth {cfg.depth}: {plan.model.num_parameters() / 1e6:.1f}M parameters, "
            f"{plan.batch_tokens:,} tokens/step ({plan.device_batch} x {cfg.seq_len} x "
            f"{plan.accum_steps} accumulation x {dist.world_size} process(es)), "
            f"{plan.total_steps} steps"
        )
    train_model = model if cfg.fsdp else distributed.wrap_ddp(model, dist)
    if cfg.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    metrics = MetricsLogger(cfg.output, resume_step=start, enabled=dist.is_main)
    progress = Progress(
        plan.total_steps,
        start,
        flops_per_token=flops_per_token(plan.model, cfg.seq_len),
        device=device,
        enabled=cfg.progress and dist.is_main,
    )

    def checkpoint(step: int) -> None:
        save_checkpoint(
            cfg.output,
            model=model,
            optimizers=optimizers,
            step=step,
            state={"loader": loader.state_dict()},
            keep_last=cfg.keep_last,
            fingerprint=fingerprint,
            dist=dist,
        )

    # --- the loop ----------------------------------------------------------------------
    train_model.train()
    for step in range(start, plan.total_steps):
        multiplier = lr_schedule(
            step, plan.total_steps, plan.warmup, cooldown_frac=cfg.cooldown_frac
        )
        set_lr_multiplier(optimizers, multiplier)
        loss_sum = torch.zeros((), device=device)
        for micro in range(plan.accum_steps):
            x, y = loader.next_batch()
            with accumulation_context(train_model, micro, plan.accum_steps), autocast(device):
                loss = lm_loss(train_model(x), y)
            (loss / plan.accum_steps).backward()
            loss_sum += loss.detach()
        grad_norm = clip_and_step(train_model, optimizers, cfg.grad_clip)
        train_loss = float(distributed.all_reduce_mean(loss_sum / plan.accum_steps, dist))
        done = step + 1

        speed = progress.update(train_loss, plan.batch_tokens)
        metrics.log(done, loss=train_loss, lr=cfg.lr * multiplier, grad_norm=grad_norm, **speed)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"the loss became {train_loss} at step {done}: lower --lr or check the data"
            )
        last = done == plan.total_steps
        if cfg.eval_every and (done % cfg.eval_every == 0 or last):
            val_loss, bpb = evaluate(train_model, val_loader, val_batches, token_bytes, dist)
            metrics.log(done, val_loss=val_loss, val_bpb=bpb)
            progress.write(f"step {done}: val loss {val_loss:.4f}, {bpb:.4f} bits/byte")
        # A sharded forward pass is a collective, so under FSDP every rank samples.
        sampling = dist.is_main or cfg.fsdp
        if cfg.sample_every and sampling and (done % cfg.sample_every == 0 or last):
            for i, prompt in enumerate(SAMPLE_PROMPTS):
                text = sample(model, tokenizer, prompt, seed=i)
                metrics.text(done, f"sample_{i}", text)
                progress.write(f"  {text!r}")
        if last or (cfg.save_every and done % cfg.save_every == 0):
            checkpoint(done)
        progress.reset_clock()
    progress.close()

    if state is not None and start >= plan.total_steps and dist.is_main:
        print(f"{cfg.output} already trained {start} steps; exporting the model again")
    whole = full_model(model, dist)  # gathers the shards under FSDP: every rank takes part
    if whole is not None and dist.is_main:
        export_hf(cfg.output, whole, tokenizer)
    metrics.close()
    distributed.barrier(dist)
    return {
        "steps": plan.total_steps,
        "resumed_from": start,
        "parameters": plan.model.num_parameters(),
        "plan": dataclasses.asdict(plan),
    }
