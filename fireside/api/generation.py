"""Running engine requests for the API: errors as HTTP, metrics, aborts when a client leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from fastapi import Request

from fireside.api.errors import APIError, from_engine_error
from fireside.api.metrics import Metrics
from fireside.api.schemas import PromptTokensDetails, Usage
from fireside.api.served import ServedModel
from fireside.engine.types import (
    FinishReason,
    RequestOutput,
    SamplingParams,
    TokenLogprob,
)
from fireside.errors import FiresideError

T = TypeVar("T")


async def generate(
    served: ServedModel,
    metrics: Metrics,
    prompt_ids: list[int],
    params: SamplingParams,
    request_id: str,
) -> AsyncIterator[RequestOutput]:
    """The engine's stream for one prompt; closing it (client gone) aborts the request."""
    tracker = metrics.track()
    stream = served.engine.generate(prompt_ids, params, request_id)
    finished = False
    try:
        while True:
            try:
                out = await anext(stream)
            except StopAsyncIteration:
                break
            except FiresideError as e:
                raise from_engine_error(e) from None
            tracker.observe(out)
            finished = out.finished
            for s in out.samples:
                if s.finish_reason == "error":
                    raise APIError(
                        "the engine failed while generating; see the server log",
                        500,
                        type="internal_error",
                        code="engine_error",
                    )
            yield out
            if finished:
                break
    finally:
        tracker.finish(aborted=not finished)
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if not finished:
            with contextlib.suppress(Exception):
                await served.engine.abort(request_id)


async def merge(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Items from several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, object] | None] = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((i, item))
        except Exception as e:  # handed to the consumer, which re-raises it
            await queue.put((i, e))
        finally:
            await queue.put(None)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            got = await queue.get()
            if got is None:
                remaining -= 1
                continue
            index, value = got
            if isinstance(value, Exception):
                raise value
            yield index, cast(T, value)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class SampleResult:
    """One sample's whole output, gathered from its deltas."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None


@dataclass
class PromptResult:
    prompt_ids: list[int]
    samples: list[SampleResult]
    prompt_logprobs: list[TokenLogprob | None] | None = None
    cached_tokens: int = 0


async def collect(stream: AsyncIterator[RequestOutput], n: int) -> PromptResult:
    result: PromptResult | None = None
    async for out in stream:
        if result is None:
            result = PromptResult(out.prompt_token_ids, [SampleResult() for _ in range(n)])
        if out.prompt_logprobs is not None:
            result.prompt_logprobs = out.prompt_logprobs
        result.cached_tokens = max(result.cached_tokens, out.num_cached_prompt_tokens)
        for d in out.samples:
            s = result.samples[d.index]
            s.text += d.text
            s.token_ids += d.token_ids
            s.logprobs += d.logprobs or []
            if d.finish_reason is not None:
                s.finish_reason, s.stop_reason = d.finish_reason, d.stop_reason
    if result is None:
        raise APIError("the engine ended the request without output", 500, type="internal_error")
    check_not_aborted(result.samples)
    return result


def check_not_aborted(samples: Sequence[SampleResult]) -> None:
    if any(s.finish_reason == "abort" for s in samples):
        # The client is still here, so the engine itself gave up (shutting down, say).
        raise APIError("the request was aborted by the server", 503, type="service_unavailable")


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it (and so aborting its engine requests) if the client leaves.

    Starlette cancels a streaming response on disconnect by itself; a plain response is
    computed in full unless someone watches the socket, which this does.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
    if task in done:
        return task.result()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    # Nobody reads this answer; 499 is nginx's "client closed request".
    raise APIError("the client closed the connection", 499, type="client_disconnected")


async def prime(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Waits for the first item, so errors the engine raises up front (queue full, prompt
    too long) become the HTTP status instead of an event in a stream already begun."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return _empty()
    return _chain(first, stream)


async def _empty() -> AsyncIterator[T]:
    return
    yield


async def _chain(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


def usage_of(prompt: int, completion: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )
