"""`fireside worker` over real gRPC on loopback: model info, generation as the local engine
makes it, cancellation and deadlines aborting on the worker, errors, health and probes; and the
gateway's RemoteEngine over it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.engine.types import PromptTooLongError, RequestOutput, WorkerLostError
from fireside.model import Tokenizer, load_pretrained
from fireside.worker.client import RemoteEngine, WorkerPool, remote_tokenizer
from fireside.worker.convert import params_to_proto
from fireside.worker.v1 import worker_pb2 as pb
from fireside.worker.v1 import worker_pb2_grpc as pb_grpc
from tests.worker_utils import Proc, free_port, start_worker

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def worker(api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(api_model_dir, tmp_path_factory.mktemp("worker-logs"))
    yield proc
    proc.stop()


@pytest.fixture
def stub(worker: Proc) -> Iterator[pb_grpc.ModelWorkerStub]:
    with grpc.insecure_channel(worker.address) as channel:
        yield pb_grpc.ModelWorkerStub(channel)


def request(prompt: list[int], **params: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=f"t-{time.monotonic_ns()}",
        prompt_token_ids=prompt,
        params=params_to_proto(SamplingParams(**params)),  # type: ignore[arg-type]
    )


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_model_info_carries_what_a_gateway_renders_with(
    stub: pb_grpc.ModelWorkerStub, api_model_dir: Path
) -> None:
    info = stub.ModelInfo(pb.ModelInfoRequest())
    local = Tokenizer.from_dir(api_model_dir)
    assert info.name == api_model_dir.name
    assert info.context_length == 1024
    assert info.chat_template == local.chat_template
    assert info.tools is False
    remote = remote_tokenizer(info)
    text = "def f(x):\n    return {'a': x}"
    assert remote.encode(text) == local.encode(text)
    messages = [{"role": "user", "content": "hi"}]
    assert remote.render_chat(messages).ids == local.render_chat(messages).ids


def test_generate_streams_what_the_local_engine_makes(
    stub: pb_grpc.ModelWorkerStub, api_model_dir: Path
) -> None:
    prompt = [5, 6, 7, 8]
    got = list(stub.Generate(request(prompt, max_tokens=12, temperature=0.0, logprobs=2)))
    assert got[0].prompt_token_ids == prompt and not got[1].prompt_token_ids
    assert got[-1].finished and got[-1].samples[0].finish_reason in ("stop", "length")
    ids = [t for m in got for s in m.samples for t in s.token_ids]
    text = "".join(s.text for m in got for s in m.samples)
    logprobs = [lp for m in got for s in m.samples for lp in s.logprobs]
    assert len(logprobs) == len(ids) and all(len(lp.top) == 2 for lp in logprobs)

    async def local() -> list[RequestOutput]:
        pre = load_pretrained(api_model_dir, "cpu")
        async with Engine.from_pretrained(pre, EngineConfig(max_num_seqs=4)) as engine:
            params = SamplingParams(max_tokens=12, temperature=0.0)
            return [o async for o in engine.generate(prompt, params, "local")]

    outs = asyncio.run(local())
    assert ids == [t for o in outs for s in o.samples for t in s.token_ids]
    assert text == "".join(s.text for o in outs for s in o.samples)


def test_a_client_going_away_aborts_the_request_on_the_worker(
    stub: pb_grpc.ModelWorkerStub, worker: Proc
) -> None:
    cancelled = worker.metric("fireside_worker_cancelled_total")
    call = stub.Generate(request([5, 6, 7], max_tokens=900, ignore_eos=True))
    next(call), next(call)
    assert worker.metric("fireside_worker_num_requests_running") == 1
    call.cancel()
    wait_for(lambda: worker.metric("fireside_worker_num_requests_running") == 0)
    assert worker.metric("fireside_worker_cancelled_total") == cancelled + 1


def test_a_deadline_aborts_the_request_on_the_worker(
    stub: pb_grpc.ModelWorkerStub, worker: Proc
) -> None:
    cancelled = worker.metric("fireside_worker_cancelled_total")
    # Eight samples of 1,000 tokens: far more than the tiny model decodes in half a second
    # (one stream of 900 tokens took under 0.5 s once decode ran as one ggml graph).
    long = request([5, 6], max_tokens=1000, n=8, ignore_eos=True)
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.Generate(long, timeout=0.5):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    wait_for(lambda: worker.metric("fireside_worker_cancelled_total") == cancelled + 1)
    wait_for(lambda: worker.metric("fireside_worker_num_requests_running") == 0)


def test_contract_errors_come_back_as_status_codes(stub: pb_grpc.ModelWorkerStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(request([5] * 1020, max_tokens=10)))
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(request([5], max_tokens=4, top_p=7.0)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_health_and_probes(worker: Proc) -> None:
    with grpc.insecure_channel(worker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fireside.worker.v1.ModelWorker"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    base = f"http://127.0.0.1:{worker.metrics_port}"
    assert httpx.get(f"{base}/livez").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    assert "fireside_worker_kv_blocks_total" in httpx.get(f"{base}/metrics").text


def test_remote_engine_skips_a_dead_worker_and_maps_errors(worker: Proc) -> None:
    from fireside.engine.grammar import GrammarFactory, grammar_tokenizer, lark_grammar

    async def run() -> None:
        dead = f"127.0.0.1:{free_port()}"
        pool = WorkerPool([dead, worker.address])
        await pool.start()
        try:
            info = await pool.wait_for_model()
            engine = RemoteEngine(pool, info)
            assert engine.context_length == 1024 and engine.is_healthy()
            assert [w.address for w in pool.healthy()] == [worker.address]
            tokenizer = remote_tokenizer(info)
            vocabulary = grammar_tokenizer(tokenizer, list(info.eos_token_ids), info.vocab_size)
            grammar = GrammarFactory(vocabulary, lark_grammar('start: "yes" | "no"'))
            params = SamplingParams(max_tokens=8, temperature=1.0, seed=3)
            params.constraint_factory = grammar
            text = "".join(
                [s.text async for o in engine.generate([5, 6], params, "g") for s in o.samples]
            )
            assert text in ("yes", "no")
            with pytest.raises(PromptTooLongError):
                async for _ in engine.generate([5] * 1020, SamplingParams(max_tokens=10), "long"):
                    pass
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_worker_dying_mid_answer_is_a_worker_lost_error(
    api_model_dir: Path, tmp_path: Path
) -> None:
    doomed = start_worker(api_model_dir, tmp_path)

    async def run() -> None:
        pool = WorkerPool([doomed.address])
        await pool.start()
        try:
            engine = RemoteEngine(pool, await pool.wait_for_model())
            stream = engine.generate([5, 6], SamplingParams(max_tokens=900, ignore_eos=True), "x")
            await anext(stream)
            doomed.kill()
            with pytest.raises(WorkerLostError, match=doomed.address):
                async for _ in stream:
                    pass
            assert not engine.is_healthy()
            assert doomed.address in engine.unavailable_reason  # what /health says meanwhile
        finally:
            await pool.close()

    try:
        asyncio.run(run())
    finally:
        doomed.stop()


def test_the_request_id_reaches_the_worker(
    api_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker served in this process (serve_worker): the gateway's request id arrives as
    `x-request-id` metadata."""
    from fireside.logs import request_id
    from fireside.settings import Settings
    from fireside.worker.server import WorkerOptions, serve_worker

    caplog.set_level(logging.DEBUG, logger="fireside.worker.server")
    settings = Settings(
        model=str(api_model_dir), host="127.0.0.1", port=free_port(), device="cpu",
        kv_cache_gib=0.05, pack_weights=False,
    )  # fmt: skip

    async def run() -> None:
        stop = asyncio.Event()
        served = asyncio.create_task(serve_worker(settings, WorkerOptions(), stop))
        pool = WorkerPool([f"127.0.0.1:{settings.port}"])
        await pool.start()
        try:
            engine = RemoteEngine(pool, await pool.wait_for_model())
            request_id.set("req-4f2a9c")
            async for _ in engine.generate([5, 6], SamplingParams(max_tokens=2), "chat-1"):
                pass
        finally:
            await pool.close()
            stop.set()
            await served

    asyncio.run(run())
    assert "generate chat-1 (request id req-4f2a9c)" in caplog.text


def test_a_worker_serving_another_model_is_not_used(
    worker: Proc, api_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        pool = WorkerPool([worker.address], model="not-this-one")
        await pool.start()
        try:
            await asyncio.sleep(2.5)  # two health checks and more
            assert pool.healthy() == []
        finally:
            await pool.close()

    asyncio.run(run())
    said = [r.message for r in caplog.records if "not used" in r.message]
    assert said == [
        f"model worker {worker.address} serves 'api-llama0', not 'not-this-one': not used"
    ]


def test_sigterm_stops_the_worker_cleanly(api_model_dir: Path, tmp_path: Path) -> None:
    """A rolling update's SIGTERM: NOT_SERVING, running calls get a grace period, exit 0."""
    proc = start_worker(api_model_dir, tmp_path)
    proc.popen.terminate()
    assert proc.popen.wait(30) == 0, proc.log.read_text()[-2000:]


def test_abort_by_request_id_ends_the_stream(stub: pb_grpc.ModelWorkerStub, worker: Proc) -> None:
    """The gateway's Abort (the app's Stop) ends the running stream on the worker."""
    req = request([5, 6, 7], max_tokens=900, ignore_eos=True)
    call = stub.Generate(req)
    next(call)
    stub.Abort(pb.AbortRequest(request_id=req.request_id))
    rest = list(call)
    assert rest[-1].finished and rest[-1].samples[0].finish_reason == "abort"
    assert sum(len(s.token_ids) for m in rest for s in m.samples) < 800
    wait_for(lambda: worker.metric("fireside_worker_num_requests_running") == 0)
