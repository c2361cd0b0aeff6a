"""The inference engine: continuous batching over a paged KV cache, streaming outputs.

    from fireside.engine import Engine, EngineConfig, SamplingParams

    engine = Engine.from_pretrained("path/to/model", EngineConfig(kv_cache_bytes=2 << 30))
    async with engine:  # start() ... shutdown()
        async for out in engine.generate(prompt_ids, SamplingParams(max_tokens=64), "req-1"):
            print(out.samples[0].text, end="", flush=True)

`generate` yields `RequestOutput` deltas until `finished`; it raises `PromptTooLongError`,
`InvalidRequestError` or `EngineOverloadedError` before the first output, and closing the
iterator (or cancelling its task) aborts the request and frees its KV blocks. The engine
starts its loop thread on first use; `start()` only makes that explicit.
"""

from fireside.engine.config import EngineConfig
from fireside.engine.engine import Engine
from fireside.engine.types import (
    EngineClient,
    EngineDeadError,
    EngineOverloadedError,
    EngineStats,
    InvalidRequestError,
    PromptTooLongError,
    RequestOutput,
    SampleDelta,
    SamplingParams,
    TokenLogprob,
    WorkerLostError,
)

__all__ = [
    "Engine",
    "EngineClient",
    "EngineConfig",
    "EngineDeadError",
    "EngineOverloadedError",
    "EngineStats",
    "InvalidRequestError",
    "PromptTooLongError",
    "RequestOutput",
    "SampleDelta",
    "SamplingParams",
    "TokenLogprob",
    "WorkerLostError",
]
