"""`fireside train sft`: supervised fine-tuning on conversations, loss on assistant tokens only.

Conversations (OpenAI messages, JSONL) are rendered with the model's own chat template; files
mix by weight (`--data chat.jsonl:3 --data code.jsonl:1`). Each step takes `batch_size`
conversations, right-padded to the longest; padding and everything the user, system or tools
said are masked out of the loss. Conversations longer than the context are truncated (or
dropped when nothing trainable survives) and counted, never silently.
"""

from __future__ import annotations

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
from fireside.train.loop import autocast, clip_and_step
from fireside.train.losses import pad_batch, token_nll
from fireside.train.optim import lr_schedule, set_lr_multiplier


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
        ids, mask = pad_batch([c.ids for c in mine], [c.mask for c in mine], pad)
        ids, mask = ids.to(device), mask.to(device)
        with autocast(device):
            nll, _ = token_nll(train_model, ids, mask)
        (nll * dist.world_size / targets).backward()
        grad_norm = clip_and_step(train_model, optimizers, opts.clip)
        loss = float(all_reduce_mean(nll.detach(), dist)) * dist.world_size / targets
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
