"""POST /v1/completions: prompts in any of OpenAI's four spellings, echo, legacy logprobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Literal, cast

from fireside.api.errors import bad_request
from fireside.api.generation import (
    PromptResult,
    SampleResult,
    check_not_aborted,
    collect,
    generate,
    merge,
    prime,
    usage_of,
)
from fireside.api.guided import constraint_factory, structured_output_grammar
from fireside.api.logprobs import TokenText, completion_logprobs
from fireside.api.metrics import Metrics
from fireside.api.sampling import check_model, check_prompt_ids, resolve_max_tokens, sampling_params
from fireside.api.schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from fireside.api.served import ServedModel
from fireside.engine.types import RequestOutput, SamplingParams, TokenConstraint, TokenLogprob

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


class CompletionJob:
    """One completions request, checked and turned into engine requests (one per prompt)."""

    def __init__(
        self, req: CompletionRequest, served: ServedModel, metrics: Metrics, names: TokenText
    ) -> None:
        self.model_name, lora = check_model(served, req.model)
        if req.suffix:
            raise bad_request("suffix is not supported by this model", "suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise bad_request("best_of must equal n (ranking samples is not supported)", "best_of")
        self.req, self.served, self.metrics, self.names = req, served, metrics, names
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.prompt_texts, self.prompts = self._prompts()
        longest = max(len(p) for p in self.prompts)
        max_tokens = resolve_max_tokens(served, longest, req.max_tokens, DEFAULT_MAX_TOKENS)
        k = req.logprobs
        self.params: SamplingParams = sampling_params(
            served,
            req,
            max_tokens=max_tokens,
            logprobs=k,
            prompt_logprobs=k if req.echo and k is not None else None,
            constraint_factory=self._constraint(),
            lora=lora,
        )

    def _constraint(self) -> Callable[[], TokenConstraint] | None:
        asked = structured_output_grammar(self.req)
        if asked is None:
            return None
        grammar, param = asked
        return constraint_factory(self.served.grammar_tokenizer(), grammar, param)

    def _prompts(self) -> tuple[list[str | None], list[list[int]]]:
        p = self.req.prompt
        texts: list[str | None]
        ids: list[list[int]]
        if isinstance(p, str):
            texts = [p]
        elif p and all(isinstance(x, str) for x in p):
            texts = [str(x) for x in p]
        elif p and all(isinstance(x, int) for x in p):
            texts, ids = [None], [cast(list[int], p)]
        elif p and all(isinstance(x, list) for x in p):
            texts, ids = [None] * len(p), cast(list[list[int]], p)
        else:
            raise bad_request("the prompt is empty", "prompt")
        if texts[0] is not None:
            # A raw prompt is the caller's own text, whole: its special tokens' texts are read
            # as those tokens (as vLLM does; a caller may send ids anyway). Text of anyone
            # else's belongs in /v1/chat/completions, whose messages never become tokens.
            encoded = self.served.tokenizer.backend.encode_batch(
                [t or "" for t in texts], add_special_tokens=self.req.add_special_tokens
            )
            ids = [list(e.ids) for e in encoded]
        for one in ids:
            check_prompt_ids(self.served, one)
        return texts, ids

    def _echo_text(self, i: int) -> str:
        text = self.prompt_texts[i]
        return text if text is not None else self.served.tokenizer.decode(self.prompts[i])

    def _streams(self) -> list[AsyncIterator[RequestOutput]]:
        return [
            generate(self.served, self.metrics, ids, self.params, f"{self.id}-{i}")
            for i, ids in enumerate(self.prompts)
        ]

    async def stream(self) -> AsyncIterator[Completion]:
        """Primes the engine first, so an up-front error is the HTTP status of the reply."""
        streams = [await prime(s) for s in self._streams()]
        return self._chunks(streams)

    def _logprobs(
        self, i: int, sample: SampleResult, prompt_result: PromptResult | None, start: int
    ) -> CompletionLogprobs | None:
        k = self.req.logprobs
        if k is None:
            return None
        ids: list[int] = []
        entries: list[TokenLogprob | None] = []
        if self.req.echo and prompt_result is not None:
            ids += prompt_result.prompt_ids
            entries += prompt_result.prompt_logprobs or [None] * len(prompt_result.prompt_ids)
        ids += sample.token_ids
        entries += sample.logprobs
        return completion_logprobs(self.names, entries, ids, k, start)

    async def run(self) -> Completion:
        n = self.req.n
        results = await asyncio.gather(*(collect(s, n) for s in self._streams()))
        choices = []
        prompt_tokens = completion_tokens = cached = 0
        for i, r in enumerate(results):
            prompt_tokens += len(r.prompt_ids)
            cached += r.cached_tokens
            echo = self._echo_text(i) if self.req.echo else ""
            for j, s in enumerate(r.samples):
                completion_tokens += len(s.token_ids)
                choices.append(
                    CompletionChoice(
                        index=i * n + j,
                        text=echo + s.text,
                        logprobs=self._logprobs(i, s, r, 0),
                        finish_reason=_finish(s.finish_reason),
                        stop_reason=s.stop_reason,
                    )
                )
        usage = usage_of(prompt_tokens, completion_tokens, cached)
        return Completion(id=self.id, model=self.model_name, choices=choices, usage=usage)

    async def _chunks(
        self, streams: list[AsyncIterator[RequestOutput]]
    ) -> AsyncIterator[Completion]:
        n = self.req.n
        started: set[int] = set()
        prompt_tokens = completion_tokens = cached = 0
        offsets: dict[int, int] = {}
        async for i, out in merge(streams):
            choices = []
            if i not in started:
                started.add(i)
                prompt_tokens += len(out.prompt_token_ids)
                cached += out.num_cached_prompt_tokens
            for d in out.samples:
                index = i * n + d.index
                text = d.text
                sample = SampleResult(text=d.text, token_ids=d.token_ids, logprobs=d.logprobs or [])
                echo_part: PromptResult | None = None
                if index not in offsets:
                    offsets[index] = 0
                    if self.req.echo:
                        text = self._echo_text(i) + text
                        echo_part = PromptResult(out.prompt_token_ids, [], out.prompt_logprobs)
                logprobs = self._logprobs(i, sample, echo_part, offsets[index])
                offsets[index] += len(text)
                completion_tokens += len(d.token_ids)
                if d.finish_reason == "abort":
                    check_not_aborted([SampleResult(finish_reason="abort")])
                if text or d.finish_reason is not None or logprobs is not None:
                    choices.append(
                        CompletionChoice(
                            index=index,
                            text=text,
                            logprobs=logprobs,
                            finish_reason=_finish(d.finish_reason),
                            stop_reason=d.stop_reason,
                        )
                    )
            for choice in choices:  # one per chunk, as OpenAI streams n > 1
                yield Completion(id=self.id, model=self.model_name, choices=[choice])
        options = self.req.stream_options
        if options is not None and options.include_usage:
            usage = usage_of(prompt_tokens, completion_tokens, cached)
            yield Completion(id=self.id, model=self.model_name, choices=[], usage=usage)


def _finish(reason: str | None) -> Literal["stop", "length"] | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
