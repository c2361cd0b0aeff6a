"""Validation loss and bits per byte, and sample generations, for any training stage.

Bits per byte divides the summed loss by the UTF-8 bytes the target tokens stand for, so models
with different tokenizers compare fairly. Special tokens stand for no text and are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tokenizers import pre_tokenizers
from torch import nn

from fireside.data.loader import PackedLoader
from fireside.model.tokenizer import Tokenizer
from fireside.train.distributed import Dist
from fireside.train.loop import autocast, evaluating


def token_byte_lengths(tokenizer: Tokenizer, size: int | None = None) -> torch.Tensor:
    """UTF-8 bytes each token id stands for (0 for special tokens and padding rows).

    A byte-level BPE token is spelled in GPT-2's 256-character byte alphabet, one character a
    byte; any other vocabulary falls back to the length of the decoded token."""
    size = size or tokenizer.vocab_size
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    special = set(tokenizer.backend.get_added_tokens_decoder())
    lengths = torch.zeros(size, dtype=torch.int64)
    for i in range(min(size, tokenizer.vocab_size)):
        token = tokenizer.id_to_token(i)
        if token is None or i in special:
            continue
        if all(ch in alphabet for ch in token):
            lengths[i] = len(token)
        else:
            lengths[i] = len(tokenizer.decode([i]).encode())
    return lengths


def evaluate(
    model: nn.Module,
    loader: PackedLoader,
    n_batches: int,
    token_bytes: torch.Tensor,
    dist: Dist,
) -> tuple[float, float]:
    """(mean loss in nats per token, bits per byte) over the loader's first n_batches, all ranks."""
    loader.batches_taken = 0  # the same held-out rows every time
    device = dist.device
    token_bytes = token_bytes.to(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # nll, tokens, nll on text, bytes
    with evaluating(model):
        for _ in range(n_batches):
            x, y = loader.next_batch()
            with autocast(device):
                logits = model(x)
            nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
            nbytes = token_bytes[y.flatten()]
            sums += torch.stack(
                [
                    nll.sum(),
                    torch.tensor(nll.numel(), device=device),
                    nll[nbytes > 0].sum(),
                    nbytes.sum(),
                ]
            ).double()
    if dist.enabled:
        torch.distributed.all_reduce(sums)
    nll_sum, count, text_nll, n_bytes = sums.tolist()
    return nll_sum / max(count, 1.0), text_nll / (math.log(2) * max(n_bytes, 1.0))


@torch.no_grad()
def sample(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.8,
    seed: int = 0,
) -> str:
    """A short continuation, for watching a run learn. Recomputes the full context each token
    (no KV cache: the engine owns that); its own generator leaves the training RNG untouched."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    ids = torch.tensor([[*bos, *tokenizer.encode(prompt)]], device=device)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", 1 << 30)
    with evaluating(model):
        for _ in range(max_new_tokens):
            with autocast(device):
                logits = model(ids[:, -limit:])[:, -1].float()
            probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            ids = torch.cat([ids, nxt], dim=1)
            if tokenizer.eos_id is not None and int(nxt) == tokenizer.eos_id:
                break
    return prompt + tokenizer.decode(ids[0, len(bos) + len(tokenizer.encode(prompt)) :].tolist())
