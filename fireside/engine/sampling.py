"""Batched sampling: one call picks the next token for every running sample.

Logprobs come from the raw logits (before bias, penalties and temperature), as vLLM reports
them by default, so they equal a plain forward pass's log_softmax. Every other parameter
shapes only the distribution the token is drawn from.

Random choices use the exponential race (argmax of p / Exp(1) noise), which draws the same
number of random values for every token; with a per-sample generator, a seeded request makes
the same choices whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fireside.engine.types import SamplingParams, TokenConstraint, TokenLogprob

# Temperatures this small are greedy: dividing by them would overflow the logits to inf.
_GREEDY_BELOW = 1e-5


@dataclass
class SamplingRow:
    """What the sampler needs to know about one sample for this step."""

    params: SamplingParams
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]
    generator: torch.Generator | None = None
    # Tokens that may not be chosen: the params' banned_token_ids, and EOS and stop tokens
    # while below min_tokens.
    banned: Sequence[int] = field(default_factory=tuple)
    constraint: TokenConstraint | None = None


def needs_processing(p: SamplingParams) -> bool:
    return bool(
        p.logit_bias
        or p.repetition_penalty != 1.0
        or p.presence_penalty
        or p.frequency_penalty
        or p.constraint_factory is not None
    )


def _process_row(logits: Tensor, row: SamplingRow) -> None:
    """Bias, penalties and constraints, in place on one row of logits."""
    p = row.params
    vocab = logits.shape[0]
    device = logits.device
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias), dtype=torch.long, device=device)
        vals = torch.tensor(list(p.logit_bias.values()), dtype=logits.dtype, device=device)
        logits.index_add_(0, ids, vals)
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(
            sorted(set(row.prompt_ids) | set(row.output_ids)), dtype=torch.long, device=device
        )
        if len(seen):
            vals = logits[seen]
            # As in CTRL and transformers: shrink positive logits, push negative ones further.
            logits[seen] = torch.where(
                vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty
            )
    if (p.presence_penalty or p.frequency_penalty) and len(row.output_ids):
        out = torch.tensor(list(row.output_ids), dtype=torch.long, device=device)
        counts = torch.bincount(out, minlength=vocab).to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    if row.constraint is not None:
        allowed = row.constraint.allowed(vocab)
        if allowed is not None:
            logits.masked_fill_(~allowed.to(device), float("-inf"))


def _filter(logits: Tensor, params: Sequence[SamplingParams]) -> Tensor:
    """Temperature, top-k, top-p and min-p on the rows that sample at random."""
    device = logits.device
    temps = torch.tensor([p.temperature for p in params], dtype=logits.dtype, device=device)
    logits = logits / temps[:, None]
    vocab = logits.shape[1]
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        top_k = torch.tensor(
            [p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=device
        )
        top_p = torch.tensor([p.top_p for p in params], dtype=logits.dtype, device=device)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        ranks = torch.arange(vocab, device=device)[None, :]
        drop = ranks >= top_k[:, None]
        probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
        # Keep the smallest set whose mass reaches top_p: drop a token once the mass before it
        # already does. The best token is always kept.
        before = probs.cumsum(dim=-1) - probs
        drop |= before >= top_p[:, None]
        drop[:, 0] = False
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    if any(p.min_p > 0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], dtype=logits.dtype, device=device)
        probs = logits.softmax(dim=-1)
        threshold = min_p[:, None] * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def _race_noise(
    shape: tuple[int, int],
    rows: Sequence[SamplingRow],
    device: torch.device,
    default: torch.Generator | None,
) -> Tensor:
    noise = torch.empty(shape, device=device)
    shared = [i for i, r in enumerate(rows) if r.generator is None]
    if shared:
        noise[shared] = torch.empty(len(shared), shape[1], device=device).exponential_(
            generator=default
        )
    for i, r in enumerate(rows):
        if r.generator is not None:
            noise[i].exponential_(generator=r.generator)
    return noise


def sample(
    logits: Tensor, rows: Sequence[SamplingRow], default_generator: torch.Generator | None = None
) -> tuple[list[int], list[TokenLogprob | None]]:
    """Next token (and, where asked, its logprob with the top alternatives) for each row.

    logits: `[len(rows), vocab]` raw model output.
    """
    logits = logits.float()
    want_logprobs = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    raw_logprobs = logits[want_logprobs].log_softmax(dim=-1) if want_logprobs else None

    processed = [i for i, r in enumerate(rows) if needs_processing(r.params)]
    # Banned tokens (call markers where no tool is offered, ends below min_tokens) for every
    # row in one indexed write: most requests ban a few, and none needs the per-row pass.
    banned = [(i, t) for i, r in enumerate(rows) for t in r.banned]
    if processed or banned:
        logits = logits.clone()
    if banned:
        at, never = zip(*banned, strict=True)
        logits[list(at), list(never)] = float("-inf")
    for i in processed:
        _process_row(logits[i], rows[i])

    tokens = logits.argmax(dim=-1)
    random_rows = [i for i, r in enumerate(rows) if r.params.temperature >= _GREEDY_BELOW]
    if random_rows:
        picked = [rows[i] for i in random_rows]
        filtered = _filter(logits[random_rows], [r.params for r in picked])
        probs = filtered.softmax(dim=-1)
        noise = _race_noise(tuple(probs.shape), picked, probs.device, default_generator)  # type: ignore[arg-type]
        tokens[random_rows] = (probs / noise).argmax(dim=-1)
    chosen = tokens.tolist()

    logprobs: list[TokenLogprob | None] = [None] * len(rows)
    if raw_logprobs is not None:
        ids = torch.tensor([chosen[i] for i in want_logprobs], device=raw_logprobs.device)
        picked_lp = raw_logprobs.gather(1, ids[:, None])[:, 0].tolist()
        k = max(rows[i].params.logprobs or 0 for i in want_logprobs)
        top_vals, top_ids = (
            raw_logprobs.topk(k, dim=-1) if k else (raw_logprobs[:, :0], ids[:, None][:, :0])
        )
        top_vals_l, top_ids_l = top_vals.tolist(), top_ids.tolist()
        for j, i in enumerate(want_logprobs):
            kk = rows[i].params.logprobs or 0
            logprobs[i] = TokenLogprob(
                token_id=chosen[i],
                logprob=picked_lp[j],
                top=list(zip(top_ids_l[j][:kk], top_vals_l[j][:kk], strict=True)),
            )
    return chosen, logprobs


def token_logprobs(logits: Tensor, next_ids: Sequence[int], k: int) -> list[TokenLogprob]:
    """Logprob of each `next_ids[i]` under `logits[i]` (raw), with the top-k alternatives:
    the prompt logprobs, where row i predicts prompt token i + 1."""
    lp = logits.float().log_softmax(dim=-1)
    ids = torch.tensor(list(next_ids), dtype=torch.long, device=lp.device)
    picked = lp.gather(1, ids[:, None])[:, 0].tolist()
    if k:
        top_vals, top_ids = lp.topk(k, dim=-1)
        vals, tops = top_vals.tolist(), top_ids.tolist()
    else:
        vals, tops = [[] for _ in picked], [[] for _ in picked]
    return [
        TokenLogprob(token_id=int(t), logprob=p, top=list(zip(ti, tv, strict=True)))
        for t, p, ti, tv in zip(next_ids, picked, tops, vals, strict=True)
    ]
