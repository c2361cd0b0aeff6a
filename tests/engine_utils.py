"""Helpers for the engine tests: tiny random models, no-cache references, output collection."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

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


class StepGate:
    """Holds the engine's model at the start of every forward until the test lets it through,
    so a test that needs a request still running, or not yet answered, waits on events and
    never on the clock (a machine ten times faster changes nothing).

    A forward pre-hook on the embedding, which every model forward calls first. Open at first.
    """

    # A forward held this long means the test itself is stuck; failing the step beats hanging.
    STUCK_S = 120.0

    def __init__(self, model: Transformer) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._permits = 0
        self._error: BaseException | None = None
        self.arrived = 0  # forwards that reached the gate
        self.passed = 0  # forwards that went through
        self._hook = model.model.embed_tokens.register_forward_pre_hook(self._at_gate)

    def _at_gate(self, module: torch.nn.Module, args: Any) -> None:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
            ready = self._cond.wait_for(
                lambda: self._open or self._permits > 0 or self._error is not None,
                timeout=self.STUCK_S,
            )
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if not ready:
                raise RuntimeError("StepGate: a forward was held for too long")
            if not self._open:
                self._permits -= 1
            self.passed += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._open, self._permits = False, 0

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def allow(self, forwards: int = 1) -> None:
        """Let `forwards` more forwards through a closed gate."""
        with self._cond:
            self._permits += forwards
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The forward held now (or the next to arrive) raises `error`; later ones run."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def wait_arrived(self, count: int) -> None:
        """Blocks until `count` forwards in all have reached the gate."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.arrived >= count, timeout=self.STUCK_S):
                raise AssertionError(f"only {self.arrived} of {count} forwards reached the gate")

    def remove(self) -> None:
        self._hook.remove()
        self.open()
