"""A gateway's engine: `RemoteEngine` satisfies the API's EngineClient over gRPC workers.

`WorkerPool` keeps a channel per worker and asks each for its health every second: a worker that
stops answering SERVING leaves the rotation and comes back when it answers again. A request goes
to a healthy worker serving the model: the least loaded (requests this gateway has in flight
there), except that the same conversation prefers the same worker (rendezvous hashing of the
prompt's leading tokens and its cache salt), for its prefix-cache hits, unless that worker is
busier than the least loaded by more than AFFINITY_SLACK requests. A worker refusing a request
before its first token (gone, not ready) is marked down and the next one tried; one that dies
mid-answer ends the stream with WorkerLostError.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fireside.engine.types import (
    EngineDeadError,
    EngineOverloadedError,
    EngineStats,
    InvalidRequestError,
    PromptTooLongError,
    RequestOutput,
    SamplingParams,
    WorkerLostError,
)
from fireside.errors import FiresideError
from fireside.logs import request_id as current_request_id
from fireside.model.tokenizer import Tokenizer
from fireside.worker.convert import output_from_proto, params_to_proto
from fireside.worker.server import SERVICE
from fireside.worker.v1 import worker_pb2 as pb
from fireside.worker.v1 import worker_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

AFFINITY_TOKENS = 32  # a conversation's prompts all begin with the same system + first turn
AFFINITY_SLACK = 4
CHECK_EVERY_S = 1.0
CHECK_TIMEOUT_S = 2.0
# A worker that comes back is found within a second or two, not after gRPC's default reconnect
# backoff (up to two minutes); keepalive finds a peer that vanished without closing its socket.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 << 20),  # a tokenizer.json can be tens of MB
]


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS toward the workers when a CA is given (their certificates must name the address
    dialled); with `cert` and `key`, this gateway's certificate for mutual TLS."""
    if ca is None:
        if cert is not None:
            raise FiresideError("--worker-cert needs --worker-ca (mutual TLS is TLS)")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


@dataclass
class Worker:
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.ModelWorkerStub
    health: health_pb2_grpc.HealthStub
    healthy: bool = False
    info: pb.ModelInfoResponse | None = None
    in_flight: int = 0
    served: int = 0  # requests sent here
    other_model: str | None = None  # the model it serves when that is not the pool's


def remote_tokenizer(info: pb.ModelInfoResponse) -> Tokenizer:
    """The worker's tokenizer and chat template, so this gateway renders prompts and reads
    tokens exactly as the worker's model was trained to."""
    from tokenizers import Tokenizer as HFTokenizer

    return Tokenizer(
        HFTokenizer.from_str(info.tokenizer_json),
        info.chat_template or None,
        dict(info.special_tokens),
    )


@dataclass
class WorkerPool:
    addresses: Sequence[str]
    credentials: grpc.ChannelCredentials | None = None
    model: str | None = None  # the served model's name: workers serving another are not used
    workers: list[Worker] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        for address in self.addresses:
            if self.credentials is not None:
                channel = grpc.aio.secure_channel(address, self.credentials, CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(address, CHANNEL_OPTIONS)
            worker = Worker(
                address,
                channel,
                pb_grpc.ModelWorkerStub(channel),
                health_pb2_grpc.HealthStub(channel),
            )
            self.workers.append(worker)
            self._tasks.append(asyncio.create_task(self._watch(worker), name=f"watch {address}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            await worker.channel.close()

    async def _watch(self, worker: Worker) -> None:
        while True:
            healthy = await self._check(worker)
            if healthy != worker.healthy:
                log.warning("model worker %s is %s", worker.address, "up" if healthy else "down")
                worker.healthy = healthy
                self._changed.set()
            await asyncio.sleep(CHECK_EVERY_S)

    async def _check(self, worker: Worker) -> bool:
        try:
            answer = await worker.health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=CHECK_TIMEOUT_S
            )
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                return False
            if worker.info is None or not worker.healthy:  # (again) after a restart
                worker.info = await worker.stub.ModelInfo(
                    pb.ModelInfoRequest(), timeout=CHECK_TIMEOUT_S
                )
        except grpc.aio.AioRpcError:
            return False
        if self.model is not None and worker.info.name != self.model:
            if worker.other_model != worker.info.name:  # said once, not every second
                log.error(
                    "model worker %s serves %r, not %r: not used",
                    worker.address,
                    worker.info.name,
                    self.model,
                )
                worker.other_model = worker.info.name
            return False
        worker.other_model = None
        return True

    def mark_down(self, worker: Worker) -> None:
        if worker.healthy:
            log.warning("model worker %s is down", worker.address)
        worker.healthy = False

    async def wait_for_model(self) -> pb.ModelInfoResponse:
        """The first healthy worker's model info (waits for one, however long)."""
        while True:
            for worker in self.workers:
                if worker.healthy and worker.info is not None:
                    return worker.info
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=5.0)

    def healthy(self) -> list[Worker]:
        return [w for w in self.workers if w.healthy]

    def choose(self, key: bytes, exclude: set[str]) -> Worker:
        candidates = [w for w in self.healthy() if w.address not in exclude]
        if not candidates:
            raise EngineDeadError(
                "no model worker is available"
                + (f" (tried {', '.join(sorted(exclude))})" if exclude else "")
            )
        least = min(w.in_flight for w in candidates)
        preferred = max(
            candidates, key=lambda w: hashlib.blake2b(key + w.address.encode()).digest()
        )
        if preferred.in_flight <= least + AFFINITY_SLACK:
            return preferred
        return min(candidates, key=lambda w: w.in_flight)


def affinity_key(prompt: Sequence[int], params: SamplingParams) -> bytes:
    """Same conversation (its prompts share their start), same salt and adapter: same key."""
    head = ",".join(map(str, prompt[:AFFINITY_TOKENS]))
    return f"{params.cache_salt}|{params.lora}|{head}".encode()


# The worker's contract errors (fireside/worker/server.py STATUS_OF), back as exceptions.
ERROR_OF: dict[grpc.StatusCode, type[FiresideError]] = {
    grpc.StatusCode.OUT_OF_RANGE: PromptTooLongError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EngineOverloadedError,
}


class RemoteEngine:
    """EngineClient over a WorkerPool serving one model."""

    def __init__(self, pool: WorkerPool, info: pb.ModelInfoResponse) -> None:
        self.pool, self.info = pool, info
        self._running: dict[str, Worker] = {}

    @property
    def context_length(self) -> int:
        return int(self.info.context_length)

    def is_healthy(self) -> bool:
        return bool(self.pool.healthy())

    @property
    def unavailable_reason(self) -> str:
        """What /health and the API say while no worker is healthy."""
        return f"no model worker is available ({', '.join(self.pool.addresses)}); retry shortly"

    def stats(self) -> EngineStats:
        return EngineStats(
            running=sum(w.in_flight for w in self.pool.workers),
            waiting=0,
            kv_blocks_total=0,
            kv_blocks_used=0,
            prefix_cache_queries=0,
            prefix_cache_hits=0,
        )

    async def abort(self, request_id: str) -> None:
        worker = self._running.get(request_id)
        if worker is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await worker.stub.Abort(pb.AbortRequest(request_id=request_id), timeout=5.0)

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        request = pb.GenerateRequest(
            request_id=request_id,
            prompt_token_ids=prompt_token_ids,
            params=params_to_proto(params),
        )
        rid = current_request_id.get()
        metadata = (("x-request-id", rid),) if rid else None
        key, tried = affinity_key(prompt_token_ids, params), set[str]()
        while True:
            worker = self.pool.choose(key, tried)
            call = worker.stub.Generate(request, metadata=metadata)
            worker.in_flight += 1
            worker.served += 1
            self._running[request_id] = worker
            started = False
            try:
                async for msg in call:
                    started = True
                    out = output_from_proto(msg, prompt_token_ids)
                    yield out
                    if out.finished:
                        return
                raise WorkerLostError(f"model worker {worker.address} ended the answer early")
            except grpc.aio.AioRpcError as e:
                busy = e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                if busy and not started and len(tried) + 1 < len(self.pool.healthy()):
                    tried.add(worker.address)  # its queue is full; another may have room
                    continue
                error = ERROR_OF.get(e.code())
                if error is not None:
                    raise error(e.details() or e.code().name) from None
                if started:
                    self.pool.mark_down(worker)
                    raise WorkerLostError(
                        f"model worker {worker.address} stopped mid-answer "
                        f"({e.code().name}: {e.details()})"
                    ) from None
                # Refused before the first token (gone, still loading): the next one, once.
                log.warning(
                    "model worker %s refused %s: %s", worker.address, request_id, e.details()
                )
                self.pool.mark_down(worker)
                tried.add(worker.address)
            finally:
                worker.in_flight -= 1
                self._running.pop(request_id, None)
                # Closed early (the client went away): cancelling the call aborts it there.
                call.cancel()


def wait_for_model_name(
    addresses: Sequence[str],
    credentials: grpc.ChannelCredentials | None,
    timeout: float | None = None,
) -> str:
    """A gateway started without --served-model-name takes its workers' model name; it asks
    before it listens (the name labels metrics and the app's model list from the start)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        for address in addresses:
            with (
                grpc.secure_channel(address, credentials, CHANNEL_OPTIONS)
                if credentials is not None
                else grpc.insecure_channel(address, CHANNEL_OPTIONS)
            ) as channel:
                try:
                    info = pb_grpc.ModelWorkerStub(channel).ModelInfo(
                        pb.ModelInfoRequest(), timeout=CHECK_TIMEOUT_S
                    )
                    return str(info.name)
                except grpc.RpcError:
                    continue
        if deadline is not None and time.monotonic() > deadline:
            raise FiresideError(
                f"no model worker answered at {', '.join(addresses)}; start them, or give "
                "--served-model-name to start the gateway first"
            )
        if not waited:
            log.warning("waiting for a model worker at %s", ", ".join(addresses))
            waited = True
        time.sleep(1.0)
