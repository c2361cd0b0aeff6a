"""Losses for fine-tuning: masked next-token loss (SFT) and direct preference optimisation (DPO)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def token_nll(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Summed cross-entropy over the tokens `mask` marks, and how many there are. Right
    padding is causal-safe: real tokens never attend to the pad tokens after them."""
    labels = shifted_labels(ids, mask)
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((labels != IGNORE).sum())


def masked_lm_loss(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Mean cross-entropy over the tokens `mask` marks. Returns (loss, tokens counted)."""
    total, n = token_nll(model, ids, mask)
    return total / max(1, n), n


def sequence_logprobs(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Sum of log p(token) over the tokens `mask` marks, per sequence: [B]."""
    logits = model(ids[:, :-1]).float()
    targets = ids[:, 1:]
    token_logp = torch.gather(logits.log_softmax(-1), 2, targets[..., None]).squeeze(-1)
    return (token_logp * mask[:, 1:].to(token_logp.dtype)).sum(-1)


@dataclass
class DPOStats:
    """Per pair: the loss, and the rewards beta * (log pi(answer) - log ref(answer))."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()

    @property
    def accuracy(self) -> Tensor:
        """Share of pairs whose chosen reward beats the rejected one."""
        return (self.chosen_rewards > self.rejected_rewards).float().mean()


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
    return DPOStats(
        losses=-F.logsigmoid(chosen - rejected),
        chosen_rewards=chosen.detach(),
        rejected_rewards=rejected.detach(),
    )
