"""`fireside train sft`: supervised fine-tuning on conversations, loss on assistant tokens only.

Conversations (OpenAI messages, JSONL) are rendered with the model's own chat template; files
mix by weight (`--data chat.jsonl:3 --data code.jsonl:1`). Each step takes `batch_size`
conversations, right-padded to the longest; padding and everything the user, system or tools
said are masked out of the loss. Conversations longer than the context are truncated (or
dropped when nothing trainable survives) and counted, never silently.
"""

from __future__ import annotations

import torch

from fireside.train.chat_data import (
    LengthReport,
    TokenizedChat,
    load_sft_file,
    require_chat_template,
)
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
from fireside.train.loop import accumulation_context, autocast, clip_and_step
from fireside.train.losses import pad_batch, token_nll
from fireside.train.optim import lr_schedule, set_lr_multiplier

# Padded tokens a micro-batch may hold. A step's conversations run sorted by length in groups
# under this, each padded to its own longest: one pad to the step's longest wasted over half
# the compute on a mix of 100-token chats and 1,000-token programs or text.
MICRO_BATCH_TOKENS = 16_384


def length_groups(batch: list[TokenizedChat], budget: int) -> list[list[TokenizedChat]]:
    """`batch` sorted by length and cut into groups whose padded size (count x longest) stays
    within `budget` tokens (a longer sequence alone still makes a group)."""
    groups: list[list[TokenizedChat]] = []
    current: list[TokenizedChat] = []
    for chat in sorted(batch, key=lambda c: len(c.ids)):
        if current and len(chat.ids) * (len(current) + 1) > budget:
            groups.append(current)
            current = []
        current.append(chat)
    if current:
        groups.append(current)
    return groups


def train_sft(opts: FinetuneOptions) -> None:
    run(opts, lambda dist: _train(opts, dist))


def _train(opts: FinetuneOptions, dist: Dist) -> None:
    bundle, model, files = start(opts, dist)
    tok, device = bundle.tokenizer, dist.device
    require_chat_template(tok)
    limit = max_len(opts, bundle)
    lengths = LengthReport()
    datasets: list[list[TokenizedChat]] = [
        load_sft_file(path, tok, limit, lengths) for path, _ in files
    ]
    say(dist, f"sft: {lengths.summary()}")
    sampler = mixture_sampler(opts, files, [len(d) for d in datasets])
    pad = pad_id(bundle)

    run = begin_training("sft", opts, dist, bundle, model, files, sampler, limit)
    optimizers, total, train_model = run.optimizers, run.total, run.train_model
    for step in range(run.first, total):
        lr = lr_schedule(step, total, opts.warmup)
        set_lr_multiplier(optimizers, lr)
        batch = [datasets[f][i] for f, i in sampler.batch(step)]
        # Every rank knows the whole batch, so each can normalise by its total target count:
        # DDP's gradient average then equals the single-process mean over all target tokens.
        targets = sum(sum(c.mask[1:]) for c in batch)
        mine = batch[dist.rank :: dist.world_size]
        groups = length_groups(mine, MICRO_BATCH_TOKENS)
        nll_sum = torch.zeros((), device=device)
        for i, group in enumerate(groups):
            ids, mask = pad_batch([c.ids for c in group], [c.mask for c in group], pad)
            ids, mask = ids.to(device), mask.to(device)
            # Each rank syncs gradients on its last micro-batch only: once a step, whatever
            # its number of groups.
            with accumulation_context(train_model, i, len(groups)):
                with autocast(device):
                    nll, _ = token_nll(train_model, ids, mask)
                (nll * dist.world_size / targets).backward()
            nll_sum += nll.detach()
        grad_norm = clip_and_step(train_model, optimizers, opts.clip)
        loss = float(all_reduce_mean(nll_sum, dist)) * dist.world_size / targets
        tokens = sum(len(c.ids) for c in batch)
        stats = run.progress.update(loss, tokens=tokens)
        run.logger.log(
            step + 1,
            loss=loss,
            lr=lr * opts.lr,
            grad_norm=grad_norm,
            trained_tokens=targets,
            **stats,
        )
        run.checkpoint(step + 1)
    run.finish()
