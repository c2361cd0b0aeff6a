"""Scale-out cost: N concurrent streamed completions through a gateway (`fireside serve
--workers`) over 1 and 2 `fireside worker` processes, against the same model served by one
`fireside serve --model` process (the model in the server's own process).

    .venv/bin/python bench/scale.py                       # small random Llama, fp32, CPU
    .venv/bin/python bench/scale.py --device cuda --hidden 1024 --layers 12

Same weights, prompts and sampling on every side (greedy, ignore_eos, fixed length), the same
HTTP client (bench/api.py's), medians over repeats, every ratio against the local server
measured in the same run. With one worker the difference is the gRPC hop (gateway -> worker);
per token it is (1/gateway - 1/local) at one stream. Two workers on one machine share its cores
(each gets half the threads) or its GPU, so they show the routing, not more hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from api import api_run, fireside_serve, free_port, make_model, wait_healthy
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROMPTS = [f"def handler_{i}(request):\n    " for i in range(64)]


def wait_serving(address: str, process: subprocess.Popen[bytes]) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                sys.exit(f"fireside worker exited with code {process.returncode}")
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)


@contextlib.contextmanager
def gateway(model_dir: Path, workers: int, threads: int, device: str) -> Iterator[str]:
    """`workers` workers (threads split between them) and a gateway: its URL once healthy."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        addresses = []
        for _ in range(workers):
            port = free_port()
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // workers))}
            argv = [sys.executable, "-m", "fireside.cli", "worker", "--model", str(model_dir),
                    "--served-model-name", "bench", "--port", str(port), "--device", device]  # fmt: skip
            out = subprocess.DEVNULL
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=out))
            addresses.append(f"127.0.0.1:{port}")
        for address, proc in zip(addresses, procs, strict=True):
            wait_serving(address, proc)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "fireside.cli", "serve", "--workers", ",".join(addresses),
             "--served-model-name", "bench", "--port", str(port)],
            env={**os.environ, "OMP_NUM_THREADS": "1", "FIRESIDE_APP": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(server)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server, lambda: f"the gateway exited with code {server.returncode}")
        yield url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def measure(
    url: str, prompts: list[list[int]], n: int, tokens: int, repeats: int
) -> tuple[float, float]:
    """Median tokens/s and median time to first token (s) of n concurrent streams."""
    rates, ttfts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        made, first = asyncio.run(api_run(url, prompts[:n], tokens))
        rates.append(made / (time.perf_counter() - start))
        ttfts.append(first)
    return statistics.median(rates), statistics.median(ttfts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    results: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp), args)
        # Token-id prompts: every side gets the same ids (the tokenizer is the model's).
        from fireside.model import Tokenizer

        tokenizer = Tokenizer.from_dir(model_dir)
        prompts = [tokenizer.encode(p) for p in PROMPTS]
        local_env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "FIRESIDE_APP": "0"}
        sides = {
            "local": lambda: fireside_serve(model_dir, local_env),
            "gateway->1 worker": lambda: gateway(model_dir, 1, args.threads, args.device),
            "gateway->2 workers": lambda: gateway(model_dir, 2, args.threads, args.device),
        }
        for name, start in sides.items():
            with start() as url:
                asyncio.run(api_run(url, prompts[:2], 4))  # warm-up
                results[name] = {
                    n: measure(url, prompts, n, args.tokens, args.repeats) for n in args.concurrency
                }
    print(f"model: hidden {args.hidden}, {args.layers} layers, {args.device}; "
          f"{args.tokens} tokens/request, {args.threads} threads")  # fmt: skip
    print(f"{'side':>20} {'concurrent':>10} {'tok/s':>9} {'vs local':>9} {'TTFT ms':>9}")
    for name, by_n in results.items():
        for n, (rate, ttft) in by_n.items():
            ratio = rate / results["local"][n][0]
            print(f"{name:>20} {n:>10} {rate:>9.1f} {ratio:>9.2f} {ttft * 1000:>9.1f}")
    n = min(args.concurrency)
    local, hop = results["local"][n][0], results["gateway->1 worker"][n][0]
    print(f"gRPC hop at {n} stream(s): {(1 / hop - 1 / local) * 1000:+.2f} ms per token")


if __name__ == "__main__":
    main()
