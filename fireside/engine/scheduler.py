"""The scheduler: which tokens run in the next model step, and what their results mean.

`Scheduler.step` is one iteration of continuous batching:

1. admit waiting requests while their worst-case KV blocks fit the pool (admission control:
   a request is admitted only when its prompt plus `max_tokens` is sure to fit, so nothing
   runs out of memory and nothing is preempted; the rest wait in arrival order);
2. one forward over every decoding sample (one token each);
3. one forward over prompt chunks, within a per-step token budget, so a long prompt is
   prefilled over several steps while the decodes keep going;
4. sample, detokenize, check stop conditions, free the blocks of whatever finished.

The scheduler is single-threaded: `Engine` owns it on its loop thread.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fireside.engine.config import EngineConfig
from fireside.engine.detokenize import StreamDetokenizer
from fireside.engine.kv_cache import KVBlockPool, block_hash, build_batch_cache
from fireside.engine.one_row import OneRowDecoder
from fireside.engine.sampling import SamplingRow, sample, token_logprobs
from fireside.engine.threads import ThreadTuner, blas_tuner
from fireside.engine.types import (
    FinishReason,
    RequestOutput,
    SampleDelta,
    SamplingParams,
    TokenConstraint,
    TokenLogprob,
)
from fireside.model import serving
from fireside.model.adapters import Adapter, lora_batch
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer


@dataclass
class Sample:
    """One generated continuation of a request: its tokens, its blocks, its stream state."""

    index: int
    params: SamplingParams
    token_ids: list[int]
    num_prompt: int
    detok: StreamDetokenizer | None
    generator: torch.Generator | None
    constraint: TokenConstraint | None = None
    adapter: Adapter | None = None  # the request's LoRA adapter (None: the base model)
    salt: str | None = None  # the prefix cache's: the caller's salt and the adapter
    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # of the full blocks registered so far
    num_computed: int = 0  # tokens whose keys and values are in the cache
    reserved: int = 0  # blocks this sample may still allocate
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    # Not yet reported to the client:
    text: str = ""
    new_ids: list[int] = field(default_factory=list)
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    reported_finish: bool = False

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt :]

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    samples: list[Sample] = field(default_factory=list)
    prefilled: bool = False
    num_cached: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None
    sent_first: bool = False
    scheduled_at: float | None = None  # time.monotonic() when admitted (queue-time metric)
    adapter: Adapter | None = None  # resolved from params.lora when the request was sent

    @property
    def salt(self) -> str | None:
        """The prefix cache's salt: blocks computed under an adapter hold other keys and
        values than the base's, so each adapter (each load of it) has its own cache."""
        if self.adapter is None:
            return self.params.cache_salt
        return f"{self.params.cache_salt or ''}\x00lora:{self.adapter.key}"

    @property
    def finished(self) -> bool:
        return self.prefilled and all(s.finished for s in self.samples)


class Scheduler:
    def __init__(
        self,
        model: Transformer,
        pool: KVBlockPool,
        config: EngineConfig,
        tokenizer: Tokenizer | None,
        eos_token_ids: Sequence[int],
        context_length: int,
    ) -> None:
        self.model = model
        self.pool = pool
        self.config = config
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_token_ids)
        self.context_length = context_length
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.reserved = 0  # blocks promised to running samples but not yet allocated
        self.device = model.device
        # One-row steps run on the BLAS's threads; how many is measured (threads.py).
        self.blas_threads: ThreadTuner | None = (
            blas_tuner() if serving.cpu_fp32(model.device, model.dtype) else None
        )
        # Single-stream decode steps in numpy where the model allows (one_row.py).
        self.one_row = OneRowDecoder(model, pool) if OneRowDecoder.applies(model) else None
        self.generator = torch.Generator(device=self.device)
        if config.seed is not None:
            self.generator.manual_seed(config.seed)
        else:
            self.generator.seed()

    # -- requests ------------------------------------------------------------------------

    def blocks_needed(self, prompt_len: int, params: SamplingParams) -> int:
        """Worst case for a request: every sample runs to max_tokens; samples share only the
        prompt's full blocks."""
        bs = self.pool.block_size
        return math.ceil((prompt_len + params.max_tokens) / bs) + (
            params.n - 1
        ) * self._fork_blocks(prompt_len, params)

    def _fork_blocks(self, prompt_len: int, params: SamplingParams) -> int:
        """Blocks a sample beyond the first may allocate: its copy of the prompt's partial
        last block and everything it generates."""
        bs = self.pool.block_size
        return math.ceil((prompt_len + params.max_tokens) / bs) - prompt_len // bs

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def abort(self, request_id: str) -> Request | None:
        for req in self.waiting:
            if req.request_id == request_id:
                self.waiting.remove(req)
                return req
        for req in self.running:
            if req.request_id == request_id:
                self.running.remove(req)
                for s in req.samples:
                    self._finish(s, "abort")
                return req
        return None

    def fail_all(self, reason: FinishReason = "error") -> list[RequestOutput]:
        """Finish every request (after an error in a step, or at shutdown); their last outputs."""
        outputs = []
        for req in list(self.running) + list(self.waiting):
            for s in req.samples:
                self._finish(s, reason)
            outputs.append(self.final_output(req, reason))
        self.running.clear()
        self.waiting.clear()
        return outputs

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- the step ------------------------------------------------------------------------

    def step(self) -> list[tuple[Request, RequestOutput]]:
        self._admit()
        decoding = [
            s for req in self.running if req.prefilled for s in req.samples if not s.finished
        ]
        # Prompts always get some room, so a full decode batch cannot starve them.
        budget = max(self.config.max_num_batched_tokens - len(decoding), self.pool.block_size)
        chunks: list[tuple[Request, int]] = []
        for req in self.running:
            if req.prefilled or budget <= 0:
                continue
            s = req.samples[0]
            n = min(len(req.prompt_ids) - s.num_computed, budget)
            chunks.append((req, n))
            budget -= n
        rows = len(decoding) + sum(n for _, n in chunks)
        tuner = self.blas_threads if rows == 1 else None
        with (
            tuner.step() if tuner is not None else contextlib.nullcontext(),
            serving.one_row_threads(
                rows, self.device, self.model.dtype, tuner.current if tuner is not None else None
            ),
        ):
            if decoding:
                self._decode(decoding)
            if chunks:
                self._prefill(chunks)
        return self._collect()

    def _admit(self) -> None:
        samples = sum(req.params.n for req in self.running)
        while self.waiting:
            req = self.waiting[0]
            if samples + req.params.n > self.config.max_num_seqs:
                return
            use_cache = self.config.prefix_caching and req.params.prompt_logprobs is None
            salt = req.salt
            matched = self.pool.cached_prefix(req.prompt_ids, salt) if use_cache else []
            # A matched block sitting in the free list stops counting as free once shared.
            revived = sum(1 for b in matched if self.pool.refcount[b] == 0)
            need = self.blocks_needed(len(req.prompt_ids), req.params) - len(matched)
            if need + revived > self.pool.num_free - self.reserved:
                return
            self.waiting.popleft()
            samples += req.params.n
            req.scheduled_at = time.monotonic()
            if use_cache:
                self.pool.prefix_queries += len(req.prompt_ids)
                self.pool.prefix_hits += len(matched) * self.pool.block_size
            for b in matched:
                self.pool.share(b)
            first = self._new_sample(req, 0, list(req.prompt_ids))
            first.blocks = matched
            first.hashes = self.pool.prefix_hashes(req.prompt_ids, salt)[: len(matched)]
            first.num_computed = len(matched) * self.pool.block_size
            first.reserved = need
            self.reserved += need
            req.num_cached = first.num_computed
            req.samples = [first]
            if req.params.prompt_logprobs is not None:
                req.prompt_logprobs = [None]
            self.running.append(req)

    def _new_sample(self, req: Request, index: int, token_ids: list[int]) -> Sample:
        p = req.params
        generator = None
        if p.seed is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(p.seed + index)
        detok = None
        if self.tokenizer is not None:
            detok = StreamDetokenizer(
                self.tokenizer,
                req.prompt_ids,
                stop=p.stop,
                include_stop=p.include_stop_str_in_output,
                skip_special_tokens=p.skip_special_tokens,
                keep_special=p.keep_special_token_ids,
            )
        constraint = p.constraint_factory() if p.constraint_factory is not None else None
        return Sample(
            index=index,
            params=p,
            token_ids=token_ids,
            num_prompt=len(req.prompt_ids),
            detok=detok,
            generator=generator,
            constraint=constraint,
            adapter=req.adapter,
            salt=req.salt,
        )

    # -- blocks --------------------------------------------------------------------------

    def _ensure_blocks(self, s: Sample, upto: int) -> None:
        """Give `s` enough blocks to hold `upto` tokens."""
        while len(s.blocks) * self.pool.block_size < upto:
            s.blocks.append(self.pool.allocate())
            s.reserved -= 1
            self.reserved -= 1

    def _register_full_blocks(self, s: Sample) -> None:
        if not self.config.prefix_caching:
            return
        bs = self.pool.block_size
        while (len(s.hashes) + 1) * bs <= s.num_computed:
            i = len(s.hashes)
            parent = s.hashes[-1] if s.hashes else None
            h = block_hash(parent, s.token_ids[i * bs : (i + 1) * bs], s.salt)
            self.pool.register(s.blocks[i], h)
            s.hashes.append(h)

    def _finish(self, s: Sample, reason: FinishReason, stop: str | int | None = None) -> None:
        if s.finished:
            return
        s.finish_reason, s.stop_reason = reason, stop
        if s.detok is not None and not isinstance(stop, str):
            s.text += s.detok.flush()
        self.pool.release(s.blocks)
        s.blocks = []
        self.reserved -= s.reserved
        s.reserved = 0

    # -- model steps ---------------------------------------------------------------------

    def _forward(self, rows: list[tuple[Sample, list[int]]]) -> Tensor:
        """Run new tokens for each sample at its next positions; returns hidden [B, T, d]."""
        for s, toks in rows:
            self._ensure_blocks(s, s.num_computed + len(toks))
        cache, positions = build_batch_cache(
            self.pool,
            [s.blocks for s, _ in rows],
            [s.num_computed for s, _ in rows],
            [len(t) for _, t in rows],
            self.model.config.sliding_window,
            self.device,
        )
        T = positions.shape[1]
        ids = torch.tensor([t + [0] * (T - len(t)) for _, t in rows], dtype=torch.long)
        with lora_batch([s.adapter for s, _ in rows], self.device):
            hidden = self.model.hidden_states(ids.to(self.device), positions, cache)
        for s, toks in rows:
            s.num_computed += len(toks)
            self._register_full_blocks(s)
        return hidden

    def _decode(self, samples: list[Sample]) -> None:
        if self.one_row is not None and len(samples) == 1 and samples[0].adapter is None:
            s = samples[0]
            self._ensure_blocks(s, s.num_computed + 1)
            logits = self.one_row.decode(s.token_ids[-1], s.num_computed, s.blocks)
            s.num_computed += 1
            self._register_full_blocks(s)
            self._sample_and_append(samples, logits)
            return
        hidden = self._forward([(s, [s.token_ids[-1]]) for s in samples])
        logits = self.model.logits(hidden[:, 0])
        self._sample_and_append(samples, logits)

    def _prefill(self, chunks: list[tuple[Request, int]]) -> None:
        rows = []
        for req, n in chunks:
            s = req.samples[0]
            rows.append((s, req.prompt_ids[s.num_computed : s.num_computed + n]))
        starts = [s.num_computed for s, _ in rows]
        hidden = self._forward(rows)
        done: list[Request] = []
        last_logits: list[Tensor] = []
        for i, (req, n) in enumerate(chunks):
            if req.params.prompt_logprobs is not None:
                assert req.prompt_logprobs is not None
                # Row t predicts prompt token start + t + 1.
                upto = min(n, len(req.prompt_ids) - starts[i] - 1)
                if upto > 0:
                    nxt = req.prompt_ids[starts[i] + 1 : starts[i] + 1 + upto]
                    chunk_logits = self.model.logits(hidden[i, :upto])
                    req.prompt_logprobs.extend(
                        token_logprobs(chunk_logits, nxt, req.params.prompt_logprobs)
                    )
            if starts[i] + n == len(req.prompt_ids):
                done.append(req)
                last_logits.append(hidden[i, n - 1])
        if not done:
            return
        logits = self.model.logits(torch.stack(last_logits))
        samples: list[Sample] = []
        rows_logits: list[Tensor] = []
        for req, row in zip(done, logits, strict=True):
            req.prefilled = True
            self._fork(req)
            samples.extend(req.samples)
            rows_logits.extend([row] * len(req.samples))
        self._sample_and_append(samples, torch.stack(rows_logits))

    def _fork(self, req: Request) -> None:
        """n samples share the prompt's full blocks; each copies the partial last block."""
        first = req.samples[0]
        bs = self.pool.block_size
        full = first.num_computed // bs
        per_fork = self._fork_blocks(len(req.prompt_ids), req.params)
        for index in range(1, req.params.n):
            s = self._new_sample(req, index, list(first.token_ids))
            for b in first.blocks[:full]:
                self.pool.share(b)
            s.blocks = list(first.blocks[:full])
            s.hashes = list(first.hashes)
            s.num_computed = first.num_computed
            # The first sample's reservation covered its siblings; hand each its share.
            first.reserved -= per_fork
            s.reserved = per_fork
            if full < len(first.blocks):
                self._ensure_blocks(s, len(first.blocks) * bs)
                self.pool.copy_block(first.blocks[full], s.blocks[-1])
            req.samples.append(s)

    def _sample_and_append(self, samples: list[Sample], logits: Tensor) -> None:
        rows = []
        for s in samples:
            p = s.params
            out_len = len(s.token_ids) - s.num_prompt
            banned: Sequence[int] = p.banned_token_ids
            if out_len < p.min_tokens:
                ends = set(p.stop_token_ids) | (set() if p.ignore_eos else self.eos_ids)
                banned = sorted(ends | set(banned))
            rows.append(
                SamplingRow(
                    params=p,
                    prompt_ids=s.token_ids[: s.num_prompt],
                    output_ids=s.output_ids,
                    generator=s.generator,
                    banned=banned,
                    constraint=s.constraint,
                )
            )
        tokens, logprobs = sample(logits, rows, self.generator)
        for s, tok, lp in zip(samples, tokens, logprobs, strict=True):
            self._append(s, tok, lp)

    def _append(self, s: Sample, token: int, lp: TokenLogprob | None) -> None:
        p = s.params
        s.token_ids.append(token)
        s.new_ids.append(token)
        if lp is not None:
            s.new_logprobs.append(lp)
        if s.constraint is not None:
            s.constraint.accept(token)
        out_len = len(s.token_ids) - s.num_prompt
        if token in p.stop_token_ids:
            self._finish(s, "stop", token)
            return
        if token in self.eos_ids and not p.ignore_eos:
            self._finish(s, "stop", None)
            return
        if s.detok is not None:
            delta, stop = s.detok.add(token)
            s.text += delta
            if stop is not None:
                self._finish(s, "stop", stop)
                return
        if s.constraint is not None and s.constraint.is_finished():
            self._finish(s, "stop")
        elif out_len >= p.max_tokens or len(s.token_ids) >= self.context_length:
            self._finish(s, "length")

    # -- outputs -------------------------------------------------------------------------

    def _collect(self) -> list[tuple[Request, RequestOutput]]:
        outputs: list[tuple[Request, RequestOutput]] = []
        still: list[Request] = []
        for req in self.running:
            out = self.drain(req)
            if out is not None:
                outputs.append((req, out))
            if not req.finished:
                still.append(req)
        self.running = still
        return outputs

    def final_output(self, req: Request, reason: FinishReason) -> RequestOutput:
        """The last output of a request ended from outside (abort, error): whatever its samples
        produced, and every sample not yet reported finished, finished with `reason`."""
        out = self.drain(req) or RequestOutput(
            request_id=req.request_id, samples=[], prompt_token_ids=req.prompt_ids
        )
        reported = {d.index for d in out.samples} | {
            s.index for s in req.samples if s.reported_finish
        }
        out.samples += [
            SampleDelta(index=i, finish_reason=reason)
            for i in range(req.params.n)
            if i not in reported
        ]
        out.finished = True
        return out

    def drain(self, req: Request) -> RequestOutput | None:
        """What `req` produced since its last output, or None if nothing new."""
        deltas: list[SampleDelta] = []
        for s in req.samples:
            if not (s.new_ids or s.text or (s.finished and not s.reported_finish)):
                continue
            deltas.append(
                SampleDelta(
                    index=s.index,
                    text=s.text,
                    token_ids=s.new_ids,
                    logprobs=s.new_logprobs if req.params.logprobs is not None else None,
                    finish_reason=s.finish_reason,
                    stop_reason=s.stop_reason,
                )
            )
            s.text, s.new_ids, s.new_logprobs = "", [], []
            s.reported_finish = s.finished
        if not deltas:
            return None
        out = RequestOutput(
            request_id=req.request_id,
            samples=deltas,
            prompt_token_ids=req.prompt_ids,
            prompt_logprobs=None if req.sent_first else req.prompt_logprobs,
            finished=all(s.finished for s in req.samples) and req.prefilled,
            num_cached_prompt_tokens=req.num_cached,
            scheduled_at=req.scheduled_at,
        )
        req.sent_first = True
        return out
