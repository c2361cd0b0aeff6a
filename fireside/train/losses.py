"""Losses for fine-tuning: masked next-token loss (SFT) and direct preference optimisation (DPO)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fireside.model.transformer import Transformer

IGNORE = -100


def pad_batch(
    seqs: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], pad_id: int
) -> tuple[Tensor, Tensor]:
    """Right-pad to the longest sequence: ids [B, T] and a mask [B, T] that is 0 on padding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.long)
    return ids, mask


def shifted_labels(ids: Tensor, mask: Tensor) -> Tensor:
    """Targets for positions 0..T-2: the next token where it trains, IGNORE elsewhere."""
    labels = ids[:, 1:].clone()
    labels[mask[:, 1:] == 0] = IGNORE
    return labels


def masked_lm_loss(model: Transformer, ids: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Mean cross-entropy over the tokens `mask` marks (right padding is causal-safe: real
    tokens never attend to the pad tokens after them). Returns (loss, tokens counted)."""
    labels = shifted_labels(ids, mask)
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE
    )
    return loss, int((labels != IGNORE).sum())


def sequence_logprobs(model: Transformer, ids: Tensor, mask: Tensor) -> Tensor:
    """Sum of log p(token) over the tokens `mask` marks, per sequence: [B]."""
    logits = model(ids[:, :-1]).float()
    targets = ids[:, 1:]
    token_logp = torch.gather(logits.log_softmax(-1), 2, targets[..., None]).squeeze(-1)
    return (token_logp * mask[:, 1:].to(token_logp.dtype)).sum(-1)


@dataclass
class DPOStats:
    loss: Tensor
    chosen_reward: Tensor  # beta * (log pi(chosen) - log ref(chosen)), batch mean
    rejected_reward: Tensor
    accuracy: Tensor  # share of pairs where the chosen reward beats the rejected


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
) -> DPOStats:
    """Rafailov et al. 2023: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return DPOStats(
        loss=loss,
        chosen_reward=chosen.detach().mean(),
        rejected_reward=rejected.detach().mean(),
        accuracy=(chosen > rejected).float().mean().detach(),
    )
