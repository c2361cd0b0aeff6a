"""`fireside worker`: one model's engine behind gRPC (fireside.worker.v1.ModelWorker), with the
standard health service and an HTTP port for Prometheus and probes.

The server listens at once and says NOT_SERVING until the model has loaded (and again if the
engine dies), so gateways and orchestrators wait on health rather than on start-up timeouts.
A call the client cancels (it went away, or its deadline passed) cancels its handler, which
closes the engine's stream: the request is aborted and its KV blocks freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from fireside.engine.types import (
    EngineDeadError,
    EngineOverloadedError,
    InvalidRequestError,
    PromptTooLongError,
    RequestOutput,
)
from fireside.errors import FiresideError
from fireside.settings import Settings
from fireside.worker.convert import output_to_proto, params_from_proto
from fireside.worker.metrics import MetricsServer, WorkerMetrics
from fireside.worker.v1 import worker_pb2 as pb
from fireside.worker.v1 import worker_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from fireside.engine import Engine
    from fireside.engine.grammar import GrammarFactory
    from fireside.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

SERVICE = "fireside.worker.v1.ModelWorker"
# The engine's contract errors as gRPC status codes; the gateway maps them back.
STATUS_OF: tuple[tuple[type[FiresideError], grpc.StatusCode], ...] = (
    (PromptTooLongError, grpc.StatusCode.OUT_OF_RANGE),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (EngineOverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineDeadError, grpc.StatusCode.UNAVAILABLE),
)


@dataclass
class WorkerOptions:
    metrics_port: int | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_certs: str | None = None  # given: clients must present a certificate it signed


@dataclass
class LoadedModel:
    engine: Engine
    tokenizer: Tokenizer
    info: pb.ModelInfoResponse


def request_id_of(context: grpc.aio.ServicerContext) -> str | None:
    """The gateway's request id (gRPC metadata `x-request-id`), for this worker's logs."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return value if isinstance(value, str) else value.decode()
    return None


class ModelWorkerService(pb_grpc.ModelWorkerServicer):
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.model: LoadedModel | None = None
        self.metrics = metrics

    async def _loaded(self, context: grpc.aio.ServicerContext) -> LoadedModel:
        if self.model is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        assert self.model is not None
        return self.model

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        model = await self._loaded(context)
        params = params_from_proto(request.params)
        if request.params.HasField("grammar"):
            params.constraint_factory = _grammar_factory(model.tokenizer, request.params.grammar)
        log.debug("generate %s (request id %s)", request.request_id, request_id_of(context))
        arrival, first, ended = time.monotonic(), True, False
        self.metrics.requests.inc()
        stream = cast(
            AsyncGenerator[RequestOutput, None],
            model.engine.generate(list(request.prompt_token_ids), params, request.request_id),
        )
        try:
            async with contextlib.aclosing(stream):
                async for out in stream:
                    self.metrics.tokens.inc(sum(len(s.token_ids) for s in out.samples))
                    yield output_to_proto(out, first, arrival)
                    first = False
            ended = True
        except FiresideError as e:
            ended = True
            code = next((c for kind, c in STATUS_OF if isinstance(e, kind)), None)
            await context.abort(code or grpc.StatusCode.INTERNAL, str(e) or type(e).__name__)
        finally:
            # Otherwise the client went away or its deadline passed (gRPC cancels or closes
            # this handler): aclosing has aborted the engine's request.
            if not ended:
                self.metrics.cancelled.inc()

    async def Abort(
        self, request: pb.AbortRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbortResponse:
        model = await self._loaded(context)
        await model.engine.abort(request.request_id)
        return pb.AbortResponse()

    async def ModelInfo(
        self, request: pb.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfoResponse:
        return (await self._loaded(context)).info


def _grammar_factory(tokenizer: Tokenizer, grammar: pb.Grammar) -> GrammarFactory:
    from fireside.engine.grammar import GrammarFactory, grammar_error, grammar_tokenizer

    vocabulary = grammar_tokenizer(tokenizer, list(grammar.end_token_ids), grammar.vocab_size)
    error = grammar_error(grammar.grammar, vocabulary)
    if error is not None:
        raise InvalidRequestError(f"the grammar does not compile: {error}")
    return GrammarFactory(vocabulary, grammar.grammar)


async def load_model(settings: Settings) -> LoadedModel:
    from fireside.engine.loading import (
        engine_config_for,
        parse_loras,
        resolve_model_dir,
        served_name,
        start_engine,
    )
    from fireside.model.pretrained import uses_tools

    model_dir = resolve_model_dir(settings)
    name = served_name(settings, model_dir)
    loaded = await start_engine(
        model_dir,
        name,
        settings.device,
        engine_config_for(settings),
        parse_loras(settings.lora),
        settings.quantize,
    )
    pre, tokenizer = loaded.pretrained, loaded.pretrained.tokenizer
    info = pb.ModelInfoResponse(
        name=name,
        context_length=loaded.engine.context_length,
        chat_template=tokenizer.chat_template or "",
        tools=uses_tools(pre.generation_config),
        tokenizer_json=tokenizer.backend.to_str(),
        special_tokens={k: v for k, v in tokenizer.special.items() if v is not None},
        eos_token_ids=pre.stop_token_ids,
        vocab_size=pre.model.config.vocab_size,
        root=str(model_dir),
    )
    return LoadedModel(loaded.engine, tokenizer, info)


def server_credentials(options: WorkerOptions) -> grpc.ServerCredentials | None:
    if options.ssl_certfile is None and options.ssl_keyfile is None:
        if options.ssl_ca_certs is not None:
            raise FiresideError("--ssl-ca-certs needs --ssl-certfile and --ssl-keyfile")
        return None
    if options.ssl_certfile is None or options.ssl_keyfile is None:
        raise FiresideError("--ssl-certfile and --ssl-keyfile go together")
    ca = Path(options.ssl_ca_certs).read_bytes() if options.ssl_ca_certs else None
    pair = (Path(options.ssl_keyfile).read_bytes(), Path(options.ssl_certfile).read_bytes())
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


async def serve_worker(
    settings: Settings, options: WorkerOptions, stop: asyncio.Event | None = None
) -> None:
    """Serve until `stop` is set (SIGTERM/SIGINT under run_worker)."""
    stop = stop or asyncio.Event()
    credentials = server_credentials(options)  # a bad flag stops start-up before anything runs
    metrics = WorkerMetrics()
    service = ModelWorkerService(metrics)
    health = HealthServicer()
    for name in ("", SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.aio.server()
    pb_grpc.add_ModelWorkerServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"{settings.host}:{settings.port}"
    bound = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    if not bound:
        raise FiresideError(f"cannot listen on {address}")
    await server.start()
    http = None
    if options.metrics_port is not None:
        http = MetricsServer(settings.host, options.metrics_port, metrics, lambda: service.model)
        http.start()
    log.info("worker listening on %s (%s)", address, "TLS" if credentials else "plaintext")
    watch = asyncio.create_task(_load_and_watch(settings, service, health, metrics))
    stopped = asyncio.create_task(stop.wait())
    try:
        # A model that cannot load ends the process (an orchestrator shows the crash and its
        # reason) rather than leaving a worker that is alive and never ready.
        await asyncio.wait({watch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if watch.done() and watch.exception() is not None:
            raise watch.exception()  # type: ignore[misc]
    finally:
        stopped.cancel()
        for name in ("", SERVICE):
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)  # its error is raised above
        await server.stop(grace=5)  # running answers get a moment to finish
        if http is not None:
            http.stop()
        if service.model is not None:
            await service.model.engine.shutdown()


async def _load_and_watch(
    settings: Settings, service: ModelWorkerService, health: HealthServicer, metrics: WorkerMetrics
) -> None:
    """Load the model, then say SERVING while the engine is healthy."""
    service.model = await load_model(settings)
    metrics.engine = service.model.engine
    log.info("serving %s", service.model.info.name)
    serving: bool | None = None
    while True:
        healthy = service.model.engine.is_healthy()
        if healthy != serving:
            status = health_pb2.HealthCheckResponse
            for name in ("", SERVICE):
                await health.set(name, status.SERVING if healthy else status.NOT_SERVING)
            serving = healthy
        await asyncio.sleep(1.0)


def run_worker(settings: Settings, options: WorkerOptions) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_worker(settings, options, stop)

    asyncio.run(main())
