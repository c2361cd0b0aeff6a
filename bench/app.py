"""Chat-app overhead: N concurrent chats through the app's SSE route (POST
/api/conversations/{id}/messages: question stored, answer as a server-side task, every event
through the event log, the answer saved) against the same chats on /v1/chat/completions, on
one `fireside serve` process.

    .venv/bin/python bench/app.py                  # small random Llama, fp32, CPU

Both sides send the same messages with greedy sampling and the same max_tokens, so they
generate the same tokens (the script checks the texts match); figures are medians over
repeats, and the ratio is against /v1 measured in the same run. The goal: under 10% overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from api import fireside_serve, make_model, parse_args

QUESTIONS = [f"Write a handler number {i} for a web request." for i in range(64)]


async def v1_run(url: str, questions: list[str], tokens: int) -> tuple[int, float, list[str]]:
    """Tokens generated, median time to first text, and the texts."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(q: str) -> tuple[int, float, str]:
            body = {
                "model": "bench", "messages": [{"role": "user", "content": q}],
                "max_tokens": tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True},
            }  # fmt: skip
            start = time.perf_counter()
            first, used, text = None, 0, ""
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices", []):
                        piece = choice["delta"].get("content") or ""
                        if piece and first is None:
                            first = time.perf_counter() - start
                        text += piece
                    if chunk.get("usage"):
                        used = chunk["usage"]["completion_tokens"]
            return used, first or 0.0, text

        results = await asyncio.gather(*(one(q) for q in questions))
    return (
        sum(r[0] for r in results),
        statistics.median(r[1] for r in results),
        [r[2] for r in results],
    )


async def app_run(
    client: httpx.AsyncClient, questions: list[str], tokens: int
) -> tuple[float, float, list[str]]:
    """Wall time, median time to first delta, and the answers' texts."""
    conversations = []
    for _ in questions:  # made before the clock starts
        r = await client.post("/api/conversations", json={"temperature": 0, "max_tokens": tokens})
        conversations.append(r.json()["id"])

    async def one(cid: str, q: str) -> tuple[float, str]:
        start = time.perf_counter()
        first, text, event = None, "", ""
        async with client.stream(
            "POST", f"/api/conversations/{cid}/messages", json={"content": q}
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "delta":
                    if first is None:
                        first = time.perf_counter() - start
                    text += json.loads(line[6:])["text"]
        return first or 0.0, text

    start = time.perf_counter()
    results = await asyncio.gather(
        *(one(c, q) for c, q in zip(conversations, questions, strict=True))
    )
    wall = time.perf_counter() - start
    return wall, statistics.median(r[0] for r in results), [r[1] for r in results]


async def signed_in(url: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=600)
    body = {"email": "bench@example.com", "password": "bench-password", "name": "Bench"}
    r = await client.post("/api/auth/signup", json=body)
    if r.status_code != 201:
        sys.exit(f"sign-up failed: {r.status_code} {r.text}")
    return client


def main() -> None:
    args = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "model", args)
        env = {
            **os.environ,
            "FIRESIDE_DATA_DIR": str(Path(tmp) / "data"),
            # One bench user runs every chat at once: past the per-user cap otherwise.
            "FIRESIDE_MAX_ANSWERS_PER_USER": str(max(args.concurrency)),
        }
        with fireside_serve(model_dir, env) as url:
            asyncio.run(measure(url, args))


async def measure(url: str, args: argparse.Namespace) -> None:
    client = await signed_in(url)
    await v1_run(url, QUESTIONS[:2], 4)  # warm-up both sides
    await app_run(client, QUESTIONS[:2], 4)
    print(f"model: hidden {args.hidden}, {args.layers} layers, fp32 CPU; {args.tokens} tokens/chat")
    header = ("chats", "/v1 tok/s", "app tok/s", "app//v1", "/v1 TTFT ms", "app TTFT ms")
    print("{:>6} {:>10} {:>10} {:>8} {:>12} {:>12}".format(*header))
    for n in args.concurrency:
        batch = QUESTIONS[:n]
        v1_rate, app_rate, v1_first, app_first = [], [], [], []
        mismatched = 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            made, first, v1_texts = await v1_run(url, batch, args.tokens)
            v1_rate.append(made / (time.perf_counter() - start))
            v1_first.append(first)
            wall, first, app_texts = await app_run(client, batch, args.tokens)
            app_rate.append(made / wall)  # greedy: the same tokens as /v1 made
            app_first.append(first)
            mismatched += sum(a != b for a, b in zip(app_texts, v1_texts, strict=True))
        v, a = statistics.median(v1_rate), statistics.median(app_rate)
        row: list[Any] = [n, v, a, a / v, statistics.median(v1_first) * 1000]
        row.append(statistics.median(app_first) * 1000)
        print("{:>6} {:>10.1f} {:>10.1f} {:>8.2f} {:>12.1f} {:>12.1f}".format(*row))
        if mismatched:
            print(f"  warning: {mismatched} answers differed from /v1's (not the same tokens)")
    await client.aclose()


if __name__ == "__main__":
    main()
