"""The engine's contract (fireside/engine/types.py) to and from the wire (worker.proto)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from fireside.engine.types import (
    FinishReason,
    InvalidRequestError,
    RequestOutput,
    SampleDelta,
    SamplingParams,
    TokenLogprob,
)
from fireside.worker.v1 import worker_pb2 as pb

if TYPE_CHECKING:
    from fireside.engine.grammar import GrammarFactory

FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "abort", "error"})


def params_to_proto(p: SamplingParams) -> pb.SamplingParams:
    from fireside.engine.grammar import GrammarFactory

    msg = pb.SamplingParams(
        max_tokens=p.max_tokens,
        min_tokens=p.min_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        min_p=p.min_p,
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty,
        logit_bias=p.logit_bias,
        n=p.n,
        stop=p.stop,
        stop_token_ids=p.stop_token_ids,
        ignore_eos=p.ignore_eos,
        include_stop_str_in_output=p.include_stop_str_in_output,
        skip_special_tokens=p.skip_special_tokens,
        keep_special_token_ids=p.keep_special_token_ids,
        banned_token_ids=p.banned_token_ids,
    )
    for name in ("seed", "logprobs", "prompt_logprobs", "cache_salt", "lora"):
        value = getattr(p, name)
        if value is not None:
            setattr(msg, name, value)
    factory = p.constraint_factory
    if factory is not None:
        # Only a grammar can cross the wire; any other constraint is in-process code.
        if not isinstance(factory, GrammarFactory):
            raise InvalidRequestError("this constraint cannot be sent to a model worker")
        msg.grammar.CopyFrom(_grammar(factory))
    return msg


def _grammar(factory: GrammarFactory) -> pb.Grammar:
    return pb.Grammar(
        grammar=factory.grammar,
        end_token_ids=factory.end_token_ids,
        vocab_size=factory.vocab_size,
    )


def params_from_proto(msg: pb.SamplingParams) -> SamplingParams:
    """The worker's side; the grammar (if any) is left for the caller to build over its
    tokenizer (`SamplingParams.constraint_factory`)."""
    return SamplingParams(
        max_tokens=msg.max_tokens,
        min_tokens=msg.min_tokens,
        temperature=msg.temperature,
        top_p=msg.top_p,
        top_k=msg.top_k,
        min_p=msg.min_p,
        repetition_penalty=msg.repetition_penalty,
        presence_penalty=msg.presence_penalty,
        frequency_penalty=msg.frequency_penalty,
        logit_bias=dict(msg.logit_bias),
        seed=msg.seed if msg.HasField("seed") else None,
        n=msg.n,
        stop=list(msg.stop),
        stop_token_ids=list(msg.stop_token_ids),
        ignore_eos=msg.ignore_eos,
        include_stop_str_in_output=msg.include_stop_str_in_output,
        skip_special_tokens=msg.skip_special_tokens,
        keep_special_token_ids=list(msg.keep_special_token_ids),
        banned_token_ids=list(msg.banned_token_ids),
        logprobs=msg.logprobs if msg.HasField("logprobs") else None,
        prompt_logprobs=msg.prompt_logprobs if msg.HasField("prompt_logprobs") else None,
        cache_salt=msg.cache_salt if msg.HasField("cache_salt") else None,
        lora=msg.lora if msg.HasField("lora") else None,
    )


def _logprob_to_proto(lp: TokenLogprob) -> pb.TokenLogprob:
    return pb.TokenLogprob(
        token_id=lp.token_id,
        logprob=lp.logprob,
        top=[pb.TopLogprob(token_id=t, logprob=v) for t, v in lp.top],
    )


def _logprob_from_proto(msg: pb.TokenLogprob) -> TokenLogprob:
    return TokenLogprob(msg.token_id, msg.logprob, [(t.token_id, t.logprob) for t in msg.top])


def output_to_proto(out: RequestOutput, first: bool, arrival: float) -> pb.GenerateResponse:
    """`arrival`: time.monotonic() when the worker took the request (for its queue time)."""
    msg = pb.GenerateResponse(
        request_id=out.request_id,
        finished=out.finished,
        num_cached_prompt_tokens=out.num_cached_prompt_tokens,
        queue_seconds=-1.0 if out.scheduled_at is None else max(out.scheduled_at - arrival, 0.0),
    )
    if first:  # the prompt travels once, not with every token
        msg.prompt_token_ids.extend(out.prompt_token_ids)
        for entry in out.prompt_logprobs or ():
            msg.prompt_logprobs.append(
                pb.PromptLogprob(present=False)
                if entry is None
                else pb.PromptLogprob(present=True, value=_logprob_to_proto(entry))
            )
    for s in out.samples:
        delta = pb.SampleDelta(
            index=s.index,
            text=s.text,
            token_ids=s.token_ids,
            has_logprobs=s.logprobs is not None,
            logprobs=[_logprob_to_proto(lp) for lp in s.logprobs or ()],
            finish_reason=s.finish_reason or "",
        )
        if isinstance(s.stop_reason, str):
            delta.stop_string = s.stop_reason
        elif isinstance(s.stop_reason, int):
            delta.stop_token_id = s.stop_reason
        msg.samples.append(delta)
    return msg


def output_from_proto(msg: pb.GenerateResponse, prompt_token_ids: list[int]) -> RequestOutput:
    """`prompt_token_ids`: the caller's prompt (the worker sends it in the first response only;
    the engine's outputs all carry it)."""
    samples = []
    for d in msg.samples:
        stop_kind = d.WhichOneof("stop_reason")
        reason = d.finish_reason if d.finish_reason in FINISH_REASONS else None
        samples.append(
            SampleDelta(
                index=d.index,
                text=d.text,
                token_ids=list(d.token_ids),
                logprobs=[_logprob_from_proto(lp) for lp in d.logprobs] if d.has_logprobs else None,
                finish_reason=cast("FinishReason | None", reason),
                stop_reason=getattr(d, stop_kind) if stop_kind else None,
            )
        )
    prompt_logprobs = None
    if msg.prompt_logprobs:
        prompt_logprobs = [
            _logprob_from_proto(e.value) if e.present else None for e in msg.prompt_logprobs
        ]
    return RequestOutput(
        request_id=msg.request_id,
        samples=samples,
        prompt_token_ids=prompt_token_ids,
        prompt_logprobs=prompt_logprobs,
        finished=msg.finished,
        num_cached_prompt_tokens=msg.num_cached_prompt_tokens,
        # The worker's clock is not ours: scheduled when this output came, less the hop.
        scheduled_at=None if msg.queue_seconds < 0 else time.monotonic(),
    )
