"""The engine's public contract: what a request asks for and what it gets back.

The API layer (in-process or over gRPC) depends on this module alone; the scheduler, KV cache
and sampler behind it are free to change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from torch import Tensor

from fireside.errors import FiresideError

FinishReason = Literal["stop", "length", "abort", "error"]


class PromptTooLongError(FiresideError, ValueError):
    """Prompt (+ max_tokens) does not fit the model's context. Never silently truncated."""


class InvalidRequestError(FiresideError, ValueError):
    """Sampling parameters or prompt tokens the engine cannot honour (HTTP 400)."""


class EngineOverloadedError(FiresideError):
    """The waiting queue is full; the caller should retry later (HTTP 429)."""


class EngineDeadError(FiresideError):
    """The engine loop died; no request can be served (HTTP 503)."""


class WorkerLostError(EngineDeadError):
    """The model worker generating this request went away mid-answer (a gateway's remote
    engine); what was streamed before stays, the answer is cut (the app: `interrupted`)."""


class TokenConstraint(Protocol):
    """Constrained decoding for one sample (e.g. a JSON-schema grammar matcher).

    Before each sampled token the engine asks `allowed()` for a boolean mask over the
    vocabulary (None = no restriction), then reports the chosen token with `accept`.
    """

    def allowed(self, vocab_size: int) -> Tensor | None: ...

    def accept(self, token_id: int) -> None: ...

    def is_finished(self) -> bool: ...


@dataclass
class SamplingParams:
    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None  # same seed -> same output, whatever else is in the batch
    n: int = 1  # samples sharing the prompt's KV blocks
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    # Special tokens whose text stays in the output even when skip_special_tokens: a tool
    # format's call markers, which the caller parses out; every other one is dropped.
    keep_special_token_ids: list[int] = field(default_factory=list)
    # Tokens never sampled: a tool format's call markers when no tool is offered, so an answer
    # holds no call the caller did not ask for and no control-token text.
    banned_token_ids: list[int] = field(default_factory=list)
    logprobs: int | None = None  # None = none; k = chosen token's logprob + top-k alternatives
    prompt_logprobs: int | None = None  # same, for every prompt token (the first has none)
    # One constraint per sample (n of them), made fresh for each.
    constraint_factory: Callable[[], TokenConstraint] | None = None
    # Not sampling, but per request like the rest (vLLM's `cache_salt`): prompts reuse only
    # cached blocks made under the same salt, so one caller cannot time or count another's
    # prompt in the prefix cache. None: the unsalted cache (one trusted caller).
    cache_salt: str | None = None
    # The LoRA adapter to run with, by the name it was loaded under (None: the base model).
    lora: str | None = None


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (token_id, logprob), best first


@dataclass
class SampleDelta:
    """What one sample produced since the previous RequestOutput (streaming deltas)."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or stop token that ended it


@dataclass
class RequestOutput:
    request_id: str
    samples: list[SampleDelta]
    prompt_token_ids: list[int]
    # Only in the first output of a request that asked for them; entry 0 is None.
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finished: bool = False  # every sample has finished
    num_cached_prompt_tokens: int = 0  # prefix-cache hits for this request
    # time.monotonic() when the request was first scheduled (queue-time metric); None = unknown.
    scheduled_at: float | None = None


@dataclass
class EngineStats:
    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    prefix_cache_queries: int  # prompt tokens looked up
    prefix_cache_hits: int  # prompt tokens found cached


class EngineClient(Protocol):
    """What the API needs from an engine, in-process or remote (gRPC worker)."""

    @property
    def context_length(self) -> int: ...

    def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Yields deltas until `finished`. Raises PromptTooLongError or EngineOverloadedError
        before the first output. Closing the iterator (client gone) aborts the request."""
        ...

    async def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats: ...

    def is_healthy(self) -> bool: ...
