"""Greedy decoding for evaluation.

`generate_all` runs many prompts through the serving engine (continuous batching); it is what
HumanEval and the chat eval use. `greedy_generate` is the plain reference: one sequence, a
contiguous KV cache, the model's own forward — small enough to trust, and what tests compare
the engine's greedy answers with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fireside.model.pretrained import Pretrained
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer, attend_via_update

if TYPE_CHECKING:
    from fireside.engine import EngineConfig


class ContiguousCache:
    """The `KVCache` protocol over one growing tensor per layer (batch of one sequence)."""

    def __init__(self, num_layers: int) -> None:
        self.k: list[Tensor | None] = [None] * num_layers
        self.v: list[Tensor | None] = [None] * num_layers

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        past_k, past_v = self.k[layer], self.v[layer]
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=1), torch.cat([past_v, v], dim=1)
        self.k[layer], self.v[layer] = k, v
        # Prefill (no past) is plain causal attention and one new token sees everything, so the
        # model's own causal path is right in both cases; eval never feeds chunks after a past.
        return k.transpose(1, 2), v.transpose(1, 2), None

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attend_via_update(self, layer, q, k, v)

    @property
    def length(self) -> int:
        k = self.k[0]
        return 0 if k is None else int(k.shape[1])


class PromptTooLong(ValueError):
    pass


@torch.inference_mode()
def greedy_generate(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop_token_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
) -> str:
    """Argmax decoding; returns the text before the first stop token or stop string.

    Generation also ends at the model's context length; a prompt that does not fit raises
    PromptTooLong rather than being cut.
    """
    context = model.config.max_position_embeddings
    if len(prompt_ids) >= context:
        raise PromptTooLong(f"prompt of {len(prompt_ids)} tokens does not fit context {context}")
    if not prompt_ids:
        raise PromptTooLong("empty prompt")
    budget = min(max_new_tokens, context - len(prompt_ids))
    cache = ContiguousCache(model.config.num_hidden_layers)
    device = model.device
    x = torch.tensor([list(prompt_ids)], device=device)
    positions = torch.arange(len(prompt_ids), device=device)[None]
    out: list[int] = []
    stops = set(stop_token_ids)
    for _ in range(budget):
        logits = model(x, positions, cache)[0, -1]
        token = int(logits.argmax())
        if token in stops:
            break
        out.append(token)
        if stop_strings:
            text = tokenizer.decode(out)
            cut = min((i for s in stop_strings if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                return text[:cut]
        x = torch.tensor([[token]], device=device)
        positions = torch.tensor([[cache.length]], device=device)
    return tokenizer.decode(out)


def generate_all(
    bundle: Pretrained,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    engine_config: EngineConfig | None = None,
) -> list[str | None]:
    """Greedy replies to many prompts at once through the serving engine (continuous batching
    over its paged KV cache), so evaluating 164 problems costs about one long decode, not 164.

    Each reply is cut at the model's stop tokens or the first stop string, and at the context
    length; a prompt that leaves no room for a token gets None rather than being cut.
    """
    from fireside.engine import Engine, PromptTooLongError, SamplingParams
    from fireside.model.tool_calls import tool_format

    engine = Engine.from_pretrained(bundle, engine_config)
    # No tools are offered here: the call markers are never sampled, as the API does it.
    markers = tool_format(bundle.tokenizer).marker_ids(bundle.tokenizer)

    async def one(i: int, prompt: Sequence[int]) -> str | None:
        room = min(max_new_tokens, engine.context_length - len(prompt))
        if room < 1:
            return None
        params = SamplingParams(
            max_tokens=room,
            temperature=0.0,
            stop=list(stop_strings),
            skip_special_tokens=False,
            banned_token_ids=markers,
        )
        text: list[str] = []
        try:
            async for out in engine.generate(list(prompt), params, f"eval-{i}"):
                text.extend(s.text for s in out.samples)
        except PromptTooLongError:
            return None
        return "".join(text)

    async def run() -> list[str | None]:
        async with engine:
            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    return asyncio.run(run())
