"""`fireside train sft`: supervised fine-tuning on conversations, loss on assistant tokens only.

Conversations (OpenAI messages, JSONL) are rendered with the model's own chat template; files
mix by weight (`--data chat.jsonl:3 --data code.jsonl:1`). Each step takes `batch_size`
conversations, right-padded to the longest; padding and everything the user, system or tools
said are masked out of the loss. Conversations longer than the context are truncated (or
dropped when nothing trainable survives) and counted, never silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fireside.model.pretrained import Pretrained
from fireside.train.chat_data import (
    LengthReport,
    MixtureSampler,
    TokenizedChat,
    load_sft_file,
    require_generation_blocks,
)
from fireside.train.checkpoint import export_hf, load_latest_checkpoint, save_checkpoint
from fireside.train.finetune import (
    FinetuneOptions,
    fingerprint,
    max_len,
    start,
    total_steps,
    use_muon,
)
from fireside.train.loop import Progress, autocast, clip_and_step, deterministic, flops_per_token
from fireside.train.losses import masked_lm_loss, pad_batch
from fireside.train.metrics import MetricsLogger
from fireside.train.optim import build_optimizers, lr_schedule, set_lr_multiplier


def train_sft(opts: FinetuneOptions) -> None:
    bundle, device, files = start(opts)
    # Bit-for-bit repeatable on CPU, so a resumed run retraces the uninterrupted one.
    with deterministic(device.type == "cpu"):
        _train(opts, bundle, device, files)


def _train(
    opts: FinetuneOptions, bundle: Pretrained, device: torch.device, files: list[tuple[Path, float]]
) -> None:
    model, tok = bundle.model, bundle.tokenizer
    require_generation_blocks(tok)
    limit = max_len(opts, bundle)
    lengths = LengthReport()
    datasets: list[list[TokenizedChat]] = [
        load_sft_file(path, tok, limit, lengths) for path, _ in files
    ]
    _say(f"sft: {lengths.summary()}")
    sampler = MixtureSampler(
        [len(d) for d in datasets], [w for _, w in files], opts.batch_size, opts.seed
    )
    total = total_steps(opts, sampler)
    pad_id = tok.token_id(tok.special.get("pad_token") or "") or 0

    model.train()
    optimizers = build_optimizers(model, opts.lr, opts.weight_decay, muon=use_muon(opts, device))
    run_fingerprint = fingerprint(opts, files, "sft", total)
    state = load_latest_checkpoint(
        opts.output, model=model, optimizers=optimizers, fingerprint=run_fingerprint
    )
    first = state["step"] if state else 0
    if first:
        _say(f"sft: resuming {opts.output} at step {first}/{total}")
    logger = MetricsLogger(opts.output, resume_step=first)
    progress = Progress(
        total,
        first,
        flops_per_token=flops_per_token(model.config, limit),
        device=device,
        enabled=opts.progress,
        desc="sft",
    )
    for step in range(first, total):
        lr = lr_schedule(step, total, opts.warmup)
        set_lr_multiplier(optimizers, lr)
        batch = [datasets[f][i] for f, i in sampler.batch(step)]
        ids, mask = pad_batch([c.ids for c in batch], [c.mask for c in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        with autocast(device):
            loss, n_tokens = masked_lm_loss(model, ids, mask)
        loss.backward()
        grad_norm = clip_and_step(model, optimizers, opts.clip)
        stats = progress.update(loss.item(), tokens=int(ids.numel()))
        logger.log(
            step + 1,
            loss=loss.item(),
            lr=lr * opts.lr,
            grad_norm=grad_norm,
            trained_tokens=n_tokens,
            **stats,
        )
        if (step + 1) % opts.save_every == 0 or step + 1 == total:
            save_checkpoint(
                opts.output,
                model=model,
                optimizers=optimizers,
                step=step + 1,
                state={"epoch": step // sampler.steps_per_epoch()},
                keep_last=opts.keep_last,
                fingerprint=run_fingerprint,
            )
            progress.reset_clock()
    progress.close()
    logger.close()
    model.eval()
    export_hf(opts.output, model, tok, bundle.generation_config)
    _say(f"sft: model written to {opts.output}")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
