"""The engine: a background thread stepping the scheduler, and the async API in front of it.

The model runs on one dedicated thread so a step never blocks the event loop and every
request shares each step. Requests and aborts reach the thread through a queue; outputs come
back to each caller's event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from fireside.engine.config import EngineConfig
from fireside.engine.kv_cache import KVBlockPool, kv_bytes_per_token
from fireside.engine.scheduler import Request, Scheduler
from fireside.engine.types import (
    EngineDeadError,
    EngineOverloadedError,
    EngineStats,
    InvalidRequestError,
    PromptTooLongError,
    RequestOutput,
    SamplingParams,
)
from fireside.model import serving
from fireside.model.adapters import Adapter, AdapterRegistry
from fireside.model.pretrained import Pretrained, load_pretrained
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer

log = logging.getLogger(__name__)

_Command = tuple[str, Any]
_Item = RequestOutput | BaseException


@dataclass(frozen=True)
class _Outbox:
    """Where a request's outputs go: a queue read on the caller's event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item]


def _put_all(items: list[tuple[asyncio.Queue[_Item], _Item]]) -> None:
    for q, item in items:
        q.put_nowait(item)


def _pack_batch(model: Transformer, config: EngineConfig) -> int | None:
    """The batch to pack the weights for, or None where packing does not apply (not CPU fp32,
    no batched decode) or its second copy of the projection weights would take more than a
    quarter of the machine's memory."""
    pack = config.pack_weights_for_batch
    if pack is None or not serving.cpu_fp32(model.device, model.dtype):
        return None
    if config.max_num_seqs == 1:
        return None  # every decode step is one row, which runs on the dense weights
    projections = [p for name, p in model.named_parameters() if name.endswith("proj.weight")]
    head = getattr(model.lm_head, "weight", None)  # None when quantized (fireside.model.quantized)
    copy_bytes = 4 * sum(p.numel() for p in [*projections, *([head] if head is not None else [])])
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if copy_bytes > memory // 4:
        log.warning(
            "not packing the weights for batched decode: the packed copy (%.1f GiB) would take "
            "more than a quarter of this machine's memory; batched decode runs on the dense "
            "weights",
            copy_bytes / 2**30,
        )
        return None
    return pack


class Engine:
    """Continuous batching over a paged KV cache; satisfies `EngineClient`.

    The model's device and dtype decide where the engine runs (CPU fp32, CUDA bf16 alike).
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        config: EngineConfig | None = None,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        model.fuse_projections(_pack_batch(model, self.config))
        cfg = model.config
        bs = self.config.block_size
        max_len = min(
            self.config.max_model_len or cfg.max_position_embeddings, cfg.max_position_embeddings
        )
        blocks_per_seq = -(-max_len // bs)
        num_blocks = self.config.num_kv_blocks
        if num_blocks is None:
            fit = self.config.kv_cache_bytes // (kv_bytes_per_token(cfg, model.dtype) * bs)
            num_blocks = max(1, min(fit, blocks_per_seq * self.config.max_num_seqs))
        self.pool = KVBlockPool(cfg, num_blocks, bs, model.device, model.dtype)
        # A sequence can never outgrow the pool, whatever the model allows.
        self._context_length = min(max_len, num_blocks * bs)
        self.scheduler = Scheduler(
            model, self.pool, self.config, tokenizer, eos_token_ids, self._context_length
        )
        # LoRA adapters served beside the base (requests name one in SamplingParams.lora).
        self.adapters = AdapterRegistry(cfg, model.device, model.dtype)
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None
        self._outboxes: dict[str, _Outbox] = {}  # of requests in flight, by id
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | Pretrained,
        config: EngineConfig | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> Engine:
        """An engine for a model directory (or a loaded `Pretrained`): its tokenizer for text
        and stop strings, its generation config's EOS tokens for ending turns."""
        pre = source if isinstance(source, Pretrained) else load_pretrained(source, device, dtype)
        return cls(pre.model, pre.tokenizer, config, pre.stop_token_ids)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._ensure_started()

    async def shutdown(self) -> None:
        """Stop the loop thread; requests still running finish with reason "abort"."""
        thread = self._thread
        self._stopping = True
        self._wake.set()
        if thread is not None:
            await asyncio.to_thread(thread.join)
        # A stopped engine may be started again (tests, or a server reloading).
        self._thread = None
        self._stopping = False

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def _ensure_started(self) -> None:
        if self._stopping or self._dead is not None:
            raise EngineDeadError("the engine has shut down") from self._dead
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fireside-engine", daemon=True)
            self._thread.start()

    # -- EngineClient --------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    def is_healthy(self) -> bool:
        return self._dead is None and not self._stopping

    def stats(self) -> EngineStats:
        sched = self.scheduler
        return EngineStats(
            running=len(sched.running),
            waiting=len(sched.waiting),
            kv_blocks_total=self.pool.num_blocks,
            kv_blocks_used=self.pool.num_used,
            prefix_cache_queries=self.pool.prefix_queries,
            prefix_cache_hits=self.pool.prefix_hits,
        )

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        self.validate(prompt_token_ids, params)
        adapter = self._adapter(params)
        self._ensure_started()
        outputs: asyncio.Queue[_Item] = asyncio.Queue()
        with self._lock:
            if self._dead is not None:
                raise EngineDeadError("the engine loop has died") from self._dead
            if request_id in self._outboxes:
                raise InvalidRequestError(f"request id {request_id!r} is already running")
            if len(self._outboxes) >= self.config.max_waiting + self.config.max_num_seqs:
                raise EngineOverloadedError(
                    f"{len(self._outboxes)} requests are in flight; retry later"
                )
            self._outboxes[request_id] = _Outbox(asyncio.get_running_loop(), outputs)
        request = Request(
            request_id=request_id, prompt_ids=list(prompt_token_ids), params=params, adapter=adapter
        )
        finished = False
        try:
            self._send(("add", request))
            while True:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            if not finished:
                self._send(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    def _adapter(self, params: SamplingParams) -> Adapter | None:
        """The request's adapter, taken now: unloading it later does not touch this request."""
        if params.lora is None:
            return None
        adapter = self.adapters.get(params.lora)
        if adapter is None:
            loaded = ", ".join(a.name for a in self.adapters.list()) or "none"
            raise InvalidRequestError(f"no LoRA adapter named {params.lora!r} (loaded: {loaded})")
        return adapter

    def validate(self, prompt: Sequence[int], p: SamplingParams) -> None:
        """Refuse a request the engine cannot serve, with the reason."""
        vocab = self.model.config.vocab_size
        if not prompt:
            raise InvalidRequestError("the prompt is empty: give at least one token")
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequestError(
                f"prompt token id {bad} is outside the vocabulary [0, {vocab})"
            )
        checks: list[tuple[bool, str]] = [
            (p.max_tokens >= 1, f"max_tokens must be at least 1 (got {p.max_tokens})"),
            (
                0 <= p.min_tokens <= p.max_tokens,
                f"min_tokens must be between 0 and max_tokens (got {p.min_tokens})",
            ),
            (
                1 <= p.n <= self.config.max_num_seqs,
                f"n must be between 1 and {self.config.max_num_seqs} (got {p.n})",
            ),
            (p.temperature >= 0, f"temperature must be >= 0 (got {p.temperature})"),
            (0 < p.top_p <= 1, f"top_p must be in (0, 1] (got {p.top_p})"),
            (p.top_k >= 0, f"top_k must be >= 0, 0 = off (got {p.top_k})"),
            (0 <= p.min_p <= 1, f"min_p must be in [0, 1] (got {p.min_p})"),
            (
                p.repetition_penalty > 0,
                f"repetition_penalty must be > 0 (got {p.repetition_penalty})",
            ),
            (
                -2 <= p.presence_penalty <= 2,
                f"presence_penalty must be in [-2, 2] (got {p.presence_penalty})",
            ),
            (
                -2 <= p.frequency_penalty <= 2,
                f"frequency_penalty must be in [-2, 2] (got {p.frequency_penalty})",
            ),
            (
                p.logprobs is None or 0 <= p.logprobs <= vocab,
                f"logprobs must be in [0, {vocab}] (got {p.logprobs})",
            ),
            (
                p.prompt_logprobs is None or 0 <= p.prompt_logprobs <= vocab,
                f"prompt_logprobs must be in [0, {vocab}] (got {p.prompt_logprobs})",
            ),
            (
                all(0 <= t < vocab for t in p.logit_bias),
                f"logit_bias has token ids outside the vocabulary [0, {vocab})",
            ),
            (
                all(0 <= t < vocab for t in p.stop_token_ids),
                f"stop_token_ids has ids outside the vocabulary [0, {vocab})",
            ),
            (
                not p.stop or self.tokenizer is not None,
                "stop strings need a tokenizer; this engine was built without one",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)
        total = len(prompt) + p.max_tokens
        if total > self._context_length:
            raise PromptTooLongError(
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({p.max_tokens}) is "
                f"{total} tokens, more than the context length of {self._context_length}"
            )
        need = self.scheduler.blocks_needed(len(prompt), p)
        if need > self.pool.num_blocks:
            raise InvalidRequestError(
                f"{p.n} samples of up to {total} tokens need {need} KV blocks but the pool has "
                f"{self.pool.num_blocks}; lower n or max_tokens"
            )

    # -- the loop thread -----------------------------------------------------------------

    def _send(self, command: _Command) -> None:
        self._inbox.put(command)
        self._wake.set()

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping:
                    self._drain_inbox()
                    if not self.scheduler.has_work:
                        self._wake.wait()
                        self._wake.clear()
                        continue
                    self._step()
            self._drain_inbox()
            self._fail_all("abort", None)
        except BaseException as e:  # the thread must never die silently
            log.exception("engine loop died")
            self._die(e)

    def _die(self, cause: BaseException) -> None:
        """Answer every request in flight with EngineDeadError: those in the scheduler and
        those still in the inbox, sent while the step that died was running."""
        error = EngineDeadError(f"the engine loop died: {cause!r}")
        with self._lock:
            self._dead = cause  # under the lock: no request registers after the sweep below
        try:
            self._fail_all("error", error)
        except Exception:  # the scheduler's state may be what broke; the sweep still answers
            log.exception("ending the requests of a dead engine failed")
        with self._lock:
            boxes = list(self._outboxes.values())
            self._outboxes.clear()
        for box in boxes:
            with contextlib.suppress(RuntimeError):  # that caller's event loop has closed
                box.loop.call_soon_threadsafe(box.queue.put_nowait, error)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                self.scheduler.add(arg)
            elif kind == "abort":
                req = self.scheduler.abort(arg)
                if req is not None:
                    self._deliver([(req, self.scheduler.final_output(req, "abort"))])

    def _step(self) -> None:
        try:
            outputs = self.scheduler.step()
        except Exception:
            # One bad step (a constraint that raised, say) ends the requests in it, not the
            # engine: their blocks are freed and the next request starts clean.
            log.exception("engine step failed; ending the running requests")
            self._fail_all("error", None)
            return
        self._deliver(outputs)

    def _fail_all(self, reason: Any, error: BaseException | None) -> None:
        requests = list(self.scheduler.running) + list(self.scheduler.waiting)
        outputs = self.scheduler.fail_all(reason)
        self._deliver([(req, error or out) for req, out in zip(requests, outputs, strict=True)])

    def _deliver(self, outputs: Sequence[tuple[Request, _Item]]) -> None:
        """Hand a step's outputs to their callers: one wake-up per event loop, not one per
        request, because every wake-up costs the loop thread a GIL hand-off."""
        batches: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[_Item], _Item]]] = {}
        with self._lock:
            for req, out in outputs:
                box = self._outboxes.get(req.request_id)
                if box is None:
                    continue
                if isinstance(out, BaseException) or out.finished:
                    del self._outboxes[req.request_id]
                batches.setdefault(box.loop, []).append((box.queue, out))
        for loop, items in batches.items():
            # A closed event loop means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_put_all, items)
