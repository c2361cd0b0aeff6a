"""API overhead: N concurrent streamed completions through `fireside serve` (HTTP, SSE) against
the same requests on the engine in-process.

    .venv/bin/python bench/api.py                  # small random Llama, fp32, CPU

Both sides run the same weights, prompts and sampling (greedy, ignore_eos, fixed length);
figures are medians over repeats, and the ratio is against the in-process engine measured in
the same run, so it shows what the HTTP layer costs, not how fast the model is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import torch
from engine import fireside_generate

from fireside.engine import Engine
from fireside.model import ModelConfig, Transformer, save_pretrained, train_tokenizer

PROMPTS = [f"def handler_{i}(request):\n    " for i in range(64)]


def make_model(path: Path, args: argparse.Namespace) -> Path:
    files = sorted(Path(os.__file__).parent.joinpath("json").glob("*.py"))
    tokenizer = train_tokenizer([f.read_text() for f in files], vocab_size=1024)
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=1024,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        head_dim=64,
        max_position_embeddings=1024,
        architecture="LlamaForCausalLM",
    )
    model = Transformer(config)
    model.init_weights(std=0.02)
    save_pretrained(model, tokenizer, path)
    return path


async def api_run(url: str, prompts: list[list[int]], tokens: int) -> tuple[int, float]:
    """Tokens generated, and the median time to first token. A plain SSE reader (httpx +
    json), so the client's own cost (the `openai` SDK builds models per chunk) stays small."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(ids: list[int]) -> tuple[int, float]:
            body = {
                "model": "bench", "prompt": ids, "max_tokens": tokens, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
            }  # fmt: skip
            start = time.perf_counter()
            first, used = None, 0
            async with client.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    if first is None:
                        first = time.perf_counter() - start
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        used = usage["completion_tokens"]
            return used, first or 0.0

        results = await asyncio.gather(*(one(p) for p in prompts))
    return sum(n for n, _ in results), statistics.median(t for _, t in results)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], failure: Callable[[], str]) -> None:
    """Poll `url`/health until it answers 200; exit with failure() if the process dies first."""
    while True:
        if process.poll() is not None:
            sys.exit(failure())
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@contextlib.contextmanager
def fireside_serve(model_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """`fireside serve` on `model_dir` (served as "bench") on a free port: its URL once healthy."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fireside.cli", "serve", "--model", str(model_dir),
         "--served-model-name", "bench", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, lambda: f"fireside serve exited with code {server.returncode}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def parse_args(doc: str | None) -> argparse.Namespace:
    """The model and load both server benchmarks take (bench/api.py, bench/app.py)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse_args(__doc__)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))  # the server gets the other half
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp), args)
        engine = Engine.from_pretrained(model_dir)
        tokenizer = engine.tokenizer
        assert tokenizer is not None
        prompts = [tokenizer.encode(p) for p in PROMPTS]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
        try:
            with fireside_serve(model_dir, env) as url:
                asyncio.run(api_run(url, prompts[:2], 4))  # warm-up both sides
                asyncio.run(fireside_generate(engine, prompts[:2], 4))
                print(
                    f"model: hidden {args.hidden}, {args.layers} layers, fp32 CPU; {args.tokens} tokens/request"
                )
                print(
                    f"{'concurrent':>10} {'engine tok/s':>13} {'API tok/s':>10} {'API/engine':>11} {'API TTFT ms':>12}"
                )
                for n in args.concurrency:
                    batch = prompts[:n]
                    eng, api, ttft = [], [], []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        made = asyncio.run(fireside_generate(engine, batch, args.tokens))
                        eng.append(made / (time.perf_counter() - start))
                        start = time.perf_counter()
                        made, first = asyncio.run(api_run(url, batch, args.tokens))
                        api.append(made / (time.perf_counter() - start))
                        ttft.append(first)
                    e, a = statistics.median(eng), statistics.median(api)
                    print(
                        f"{n:>10} {e:>13.1f} {a:>10.1f} {a / e:>11.2f} {statistics.median(ttft) * 1000:>12.1f}"
                    )
        finally:
            asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
