"""Helpers for the engine tests: tiny random models, no-cache references, output collection."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fireside.engine import Engine, RequestOutput, SamplingParams, TokenLogprob
from fireside.model import Transformer
from tests.conftest import tiny_config


def tiny_model(vocab_size: int, seed: int = 0, **overrides: object) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_config(vocab_size, **overrides))
    model.init_weights(std=0.5)  # large weights: greedy choices far from ties
    return model.eval()


def plain_copy(model: Transformer) -> Transformer:
    """The same weights in a fresh model with the standard layout: a reference that shares no
    code path with the serving layout the engine switches its model to."""
    copy = Transformer(model.config)
    copy.load_state_dict({k: v.contiguous() for k, v in model.state_dict().items()})
    assert not copy.fused
    return copy.eval()


@torch.no_grad()
def greedy_reference(model: Transformer, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy continuation by full forward passes over the whole sequence, no cache at all."""
    reference = plain_copy(model)
    ids = list(prompt)
    for _ in range(max_tokens):
        ids.append(int(reference(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@dataclass
class Collected:
    outputs: list[RequestOutput] = field(default_factory=list)
    tokens: dict[int, list[int]] = field(default_factory=dict)
    text: dict[int, str] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    stop_reason: dict[int, str | int | None] = field(default_factory=dict)


async def collect(
    engine: Engine, prompt: list[int], params: SamplingParams, request_id: str
) -> Collected:
    got = Collected()
    async for out in engine.generate(prompt, params, request_id):
        got.outputs.append(out)
        for s in out.samples:
            got.tokens.setdefault(s.index, []).extend(s.token_ids)
            got.text[s.index] = got.text.get(s.index, "") + s.text
            got.logprobs.setdefault(s.index, []).extend(s.logprobs or [])
            if s.finish_reason is not None:
                got.finish[s.index] = s.finish_reason
                got.stop_reason[s.index] = s.stop_reason
    assert got.outputs[-1].finished
    return got
