"""POST /v1/chat/completions: the chat template, tools, structured output and streaming."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fireside.api.errors import bad_request
from fireside.api.generation import (
    SampleResult,
    check_not_aborted,
    collect,
    generate,
    prime,
    usage_of,
)
from fireside.api.guided import (
    constraint_factory,
    json_schema_grammar,
    structured_output_grammar,
)
from fireside.api.logprobs import TokenText, chat_logprobs
from fireside.api.metrics import Metrics
from fireside.api.sampling import check_model, check_prompt_ids, resolve_max_tokens, sampling_params
from fireside.api.schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatFinishReason,
    ChatMessage,
    ChoiceLogprobs,
    FunctionCallDelta,
    ToolCallDelta,
    Usage,
)
from fireside.api.served import ServedModel
from fireside.api.tools import (
    ToolCallStreamParser,
    parse_tool_calls,
    template_messages,
    template_tools,
    tool_call_grammar,
    tool_format,
)
from fireside.engine.types import RequestOutput, TokenConstraint
from fireside.errors import ChatTemplateError, TokenizerError


class ChatJob:
    """One chat request, checked, rendered and turned into one engine request."""

    def __init__(
        self, req: ChatCompletionRequest, served: ServedModel, metrics: Metrics, names: TokenText
    ) -> None:
        self.model_name, lora = check_model(served, req.model)
        self.req, self.served, self.metrics, self.names = req, served, metrics, names
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        choice = req.tool_choice if req.tool_choice is not None else "auto"
        if choice != "none" and not req.tools and req.tool_choice is not None:
            raise bad_request("tool_choice needs tools", "tool_choice")
        self.tools = req.tools if choice != "none" else None
        self.fmt = tool_format(served.tokenizer)
        self.prompt_ids = self._render()
        check_prompt_ids(served, self.prompt_ids, "messages")
        requested = req.max_completion_tokens or req.max_tokens
        max_tokens = resolve_max_tokens(served, len(self.prompt_ids), requested, None)
        if req.top_logprobs is not None and not req.logprobs:
            raise bad_request("top_logprobs needs logprobs to be true", "top_logprobs")
        self.top_k = req.top_logprobs or 0
        self.params = sampling_params(
            served,
            req,
            max_tokens=max_tokens,
            logprobs=self.top_k if req.logprobs else None,
            # Fireside's call markers are special tokens: kept to parse, and no other one is.
            skip_special_tokens=True if self.tools else None,
            keep_special_token_ids=self.fmt.marker_ids(served.tokenizer) if self.tools else None,
            # No tool offered, no call: the markers are never sampled, so no call and no
            # marker text reaches the answer (a model trained with tools writes them anyway).
            banned_token_ids=None if self.tools else self.fmt.marker_ids(served.tokenizer),
            constraint_factory=self._constraint(choice),
            lora=lora,
        )

    def _render(self) -> list[int]:
        messages = template_messages(self.req.messages)
        tools = template_tools(self.tools) if self.tools else None
        try:
            rendered = self.served.tokenizer.render_chat(
                messages,
                add_generation_prompt=True,
                tools=tools,
                **(self.req.chat_template_kwargs or {}),
            )
        except (ChatTemplateError, TokenizerError) as e:
            raise bad_request(str(e), "messages") from None
        return rendered.ids

    def _constraint(self, choice: Any) -> Callable[[], TokenConstraint] | None:
        """At most one of: a forced tool call, response_format, vLLM's structured outputs."""
        asked: list[tuple[str, str]] = []  # (grammar, the field it came from)
        if self.tools is not None and choice != "auto":
            named = getattr(getattr(choice, "function", None), "name", None)
            if named is not None and named not in {t.function.name for t in self.tools}:
                raise bad_request(
                    f"tool_choice names {named!r}, which is not in tools", "tool_choice"
                )
            parallel = self.req.parallel_tool_calls
            asked.append((tool_call_grammar(self.tools, choice, self.fmt, parallel), "tool_choice"))
        fmt = self.req.response_format
        if fmt is not None and fmt.type != "text":
            schema = None
            if fmt.type == "json_schema":
                if fmt.json_schema is None or fmt.json_schema.schema_ is None:
                    raise bad_request("json_schema needs a schema", "response_format.json_schema")
                schema = fmt.json_schema.schema_
            asked.append((json_schema_grammar(schema), "response_format"))
        extra = structured_output_grammar(self.req)
        if extra is not None:
            asked.append(extra)
        if not asked and self.tools is not None:
            # "auto": the model may answer or call, and a call it opens is whole and valid.
            parallel, specials = (
                self.req.parallel_tool_calls,
                self.served.tokenizer.special_token_texts(),
            )
            grammar = tool_call_grammar(self.tools, "auto", self.fmt, parallel, specials)
            asked.append((grammar, "tools"))
        if len(asked) > 1:
            names = " and ".join(param for _, param in asked)
            raise bad_request(
                f"{names} cannot be combined: each constrains the output", asked[1][1]
            )
        if not asked:
            return None
        grammar, param = asked[0]
        return constraint_factory(self.served.grammar_tokenizer(), grammar, param)

    def _stream(self) -> AsyncIterator[RequestOutput]:
        return generate(self.served, self.metrics, self.prompt_ids, self.params, self.id)

    def _logprobs(self, entries: list[Any] | None) -> ChoiceLogprobs | None:
        if not self.req.logprobs:
            return None
        return ChoiceLogprobs(content=chat_logprobs(self.names, entries or [], self.top_k))

    def _message(self, s: SampleResult) -> tuple[ChatMessage, ChatFinishReason | None]:
        reason = _finish(s.finish_reason)
        if not self.tools:
            return ChatMessage(content=s.text), reason
        content, calls = parse_tool_calls(s.text, self.fmt)
        if calls and reason == "stop":
            reason = "tool_calls"
        return ChatMessage(content=content, tool_calls=calls), reason

    async def run(self) -> ChatCompletion:
        result = await collect(self._stream(), self.req.n)
        choices = []
        for i, s in enumerate(result.samples):
            message, reason = self._message(s)
            choices.append(
                ChatChoice(
                    index=i,
                    message=message,
                    logprobs=self._logprobs(s.logprobs),
                    finish_reason=reason,
                    stop_reason=s.stop_reason,
                )
            )
        generated = sum(len(s.token_ids) for s in result.samples)
        usage = usage_of(len(result.prompt_ids), generated, result.cached_tokens)
        return ChatCompletion(id=self.id, model=self.model_name, choices=choices, usage=usage)

    async def stream(self) -> AsyncIterator[ChatCompletionChunk]:
        """Primes the engine first, so an up-front error is the HTTP status of the reply."""
        outputs = await prime(self._stream())
        return self._chunks(outputs)

    def _chunk(
        self, choices: list[ChatChunkChoice], usage: Usage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, model=self.model_name, choices=choices, usage=usage)

    async def _chunks(
        self, outputs: AsyncIterator[RequestOutput]
    ) -> AsyncIterator[ChatCompletionChunk]:
        n = self.req.n
        # One choice per chunk, as OpenAI streams n > 1 (clients read choices[0]).
        for i in range(n):
            role = ChatDelta(role="assistant", content="")
            yield self._chunk([ChatChunkChoice(index=i, delta=role)])
        parsers = [ToolCallStreamParser(self.fmt) for _ in range(n)] if self.tools else None
        called = [0] * n
        prompt_tokens = generated = cached = 0
        async for out in outputs:
            prompt_tokens = len(out.prompt_token_ids)
            cached = max(cached, out.num_cached_prompt_tokens)
            choices = []
            for d in out.samples:
                generated += len(d.token_ids)
                if d.finish_reason == "abort":
                    check_not_aborted([SampleResult(finish_reason="abort")])
                content, deltas = d.text, list[ToolCallDelta]()
                if parsers is not None:
                    content, calls = parsers[d.index].feed(d.text)
                    if d.finish_reason is not None:
                        more, late = parsers[d.index].finish()
                        content, calls = content + more, calls + late
                    for call in calls:
                        deltas.append(
                            ToolCallDelta(
                                index=called[d.index],
                                id=call.id,
                                type="function",
                                function=FunctionCallDelta(
                                    name=call.function.name, arguments=call.function.arguments
                                ),
                            )
                        )
                        called[d.index] += 1
                reason = _finish(d.finish_reason)
                if reason == "stop" and called[d.index]:
                    reason = "tool_calls"
                if not content and not deltas and reason is None and not d.logprobs:
                    continue
                delta = ChatDelta(content=content or None, tool_calls=deltas or None)
                choices.append(
                    ChatChunkChoice(
                        index=d.index,
                        delta=delta,
                        logprobs=self._logprobs(d.logprobs) if d.logprobs else None,
                        finish_reason=reason,
                        stop_reason=d.stop_reason,
                    )
                )
            for choice in choices:
                yield self._chunk([choice])
        options = self.req.stream_options
        if options is not None and options.include_usage:
            yield self._chunk([], usage_of(prompt_tokens, generated, cached))


def _finish(reason: str | None) -> ChatFinishReason | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
