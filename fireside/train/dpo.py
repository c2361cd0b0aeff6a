"""`fireside train dpo`: direct preference optimisation against the frozen starting model.

Pairs are `{"prompt": [messages], "chosen": message, "rejected": message}` (JSONL), the format
the chat app's feedback export writes. The reference model is the starting model, and since it
never changes its log-probabilities are computed once, before training: the loop then runs only
the policy, and needs no second copy of the weights in memory. With LoRA the reference is the
same weights with the adapter switched off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from fireside.errors import TrainingError
from fireside.model.lora import adapter_disabled
from fireside.train.chat_data import TokenizedPair, load_dpo_file
from fireside.train.distributed import Dist, all_reduce_mean
from fireside.train.finetune import (
    FinetuneOptions,
    begin_training,
    max_len,
    mixture_sampler,
    pad_id,
    run,
    say,
    start,
)
from fireside.train.loop import (
    autocast,
    clip_and_step,
    evaluating,
)
from fireside.train.losses import dpo_loss, pad_batch, sequence_logprobs
from fireside.train.optim import lr_schedule, set_lr_multiplier


def pair_logprobs(
    model: nn.Module, pairs: list[TokenizedPair], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of the chosen and the rejected answers, one forward pass."""
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    masks = [p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs]
    ids, mask = pad_batch(seqs, masks, pad_id)
    with autocast(device):
        logps = sequence_logprobs(model, ids.to(device), mask.to(device))
    return logps[: len(pairs)], logps[len(pairs) :]


def reference_logprobs(
    model: nn.Module,
    datasets: list[list[TokenizedPair]],
    pad_id: int,
    batch_size: int,
    progress: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    """(chosen, rejected) reference log-probs for every pair of every file."""
    out = []
    device = next(model.parameters()).device
    bar = tqdm(total=sum(map(len, datasets)), desc="dpo reference", disable=not progress)
    with evaluating(model):
        for pairs in datasets:
            chosen, rejected = [], []
            for i in range(0, len(pairs), batch_size):
                c, r = pair_logprobs(model, pairs[i : i + batch_size], pad_id, device)
                chosen.append(c.cpu())
                rejected.append(r.cpu())
                bar.update(len(c))
            out.append((torch.cat(chosen), torch.cat(rejected)))
    bar.close()
    return out


def train_dpo(opts: FinetuneOptions, beta: float = 0.1) -> None:
    if beta <= 0:
        raise TrainingError(f"--beta must be positive, got {beta}")
    opts.extra = {**opts.extra, "beta": beta}
    run(opts, lambda dist: _train(opts, beta, dist))


def _train(opts: FinetuneOptions, beta: float, dist: Dist) -> None:
    bundle, model, files = start(opts, dist)
    tok, device = bundle.tokenizer, dist.device
    limit = max_len(opts, bundle)
    datasets = [load_dpo_file(path, tok, limit) for path, _ in files]
    say(dist, f"dpo: {sum(len(d) for d in datasets)} preference pairs")
    sampler = mixture_sampler(opts, files, [len(d) for d in datasets])
    pad = pad_id(bundle)
    # Before any checkpoint is loaded, the model is the starting model: the reference. (With
    # LoRA it is the base model whatever the adapter holds.)
    with adapter_disabled(model):
        reference = reference_logprobs(
            model, datasets, pad, opts.batch_size, progress=opts.progress and dist.is_main
        )

    run = begin_training("dpo", opts, dist, bundle, model, files, sampler, limit)
    optimizers, total, train_model = run.optimizers, run.total, run.train_model
    for step in range(run.first, total):
        lr = lr_schedule(step, total, opts.warmup)
        set_lr_multiplier(optimizers, lr)
        picks = sampler.batch(step)
        mine = picks[dist.rank :: dist.world_size]
        pairs = [datasets[f][i] for f, i in mine]
        ref_chosen = torch.stack([reference[f][0][i] for f, i in mine]).to(device)
        ref_rejected = torch.stack([reference[f][1][i] for f, i in mine]).to(device)
        chosen, rejected = pair_logprobs(train_model, pairs, pad, device)
        stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
        # Normalised by the global batch, so DDP's average is the single-process mean.
        (stats.losses.sum() * dist.world_size / len(picks)).backward()
        grad_norm = clip_and_step(train_model, optimizers, opts.clip)
        sums = torch.stack(
            [
                stats.losses.detach().sum(),
                stats.chosen_rewards.sum(),
                stats.rejected_rewards.sum(),
                (stats.chosen_rewards > stats.rejected_rewards).float().sum(),
            ]
        )
        loss, chosen_reward, rejected_reward, wins = (
            all_reduce_mean(sums, dist) * dist.world_size / len(picks)
        ).tolist()
        tokens = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs) * dist.world_size
        speed = run.progress.update(loss, tokens=tokens)
        run.logger.log(
            step + 1,
            loss=loss,
            # Rewards are beta x log-ratios (policy vs reference); log-ratios read without beta.
            chosen_reward=chosen_reward,
            rejected_reward=rejected_reward,
            reward_margin=chosen_reward - rejected_reward,
            chosen_logratio=chosen_reward / beta,
            accuracy=wins,
            lr=lr * opts.lr,
            grad_norm=grad_norm,
            **speed,
        )
        run.checkpoint(step + 1)
    run.finish()
