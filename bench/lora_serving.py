"""Multi-LoRA serving: throughput of N concurrent requests when they run the base model, one
LoRA adapter, or four different adapters in the same batch.

    .venv/bin/python bench/lora_serving.py       # a ~100M-shaped random Llama, fp32, CPU

Every request decodes the same number of tokens; the figure is generated tokens per second
over the whole batch (median over repeats), and each ratio is against the base-only batch
measured in the same run, alternating configurations so drift hits all alike. The adapters
are random, rank --rank on every projection (q, k, v, o, gate, up, down): the worst case for
the low-rank updates' cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.lora_utils

from engine import add_model_args, bench_model, bench_prompts

from fireside.engine import Engine, EngineConfig, SamplingParams
from tests.lora_utils import write_adapter


async def run_batch(
    engine: Engine, prompts: list[list[int]], loras: list[str | None], new_tokens: int
) -> int:
    async def one(i: int, prompt: list[int]) -> int:
        params = SamplingParams(
            max_tokens=new_tokens, temperature=0.0, ignore_eos=True, lora=loras[i % len(loras)]
        )
        count = 0
        async for out in engine.generate(prompt, params, f"r{i}-{time.perf_counter_ns()}"):
            count += sum(len(s.token_ids) for s in out.samples)
        return count

    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()

    model = bench_model(args)
    prompts = bench_prompts(args, args.concurrent)
    configs: dict[str, list[str | None]] = {
        "base only": [None],
        "1 adapter": ["a0"],
        "4 adapters": ["a0", "a1", "a2", "a3"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        adapter_dirs = [
            write_adapter(Path(tmp) / f"a{i}", model, rank=args.rank, seed=i, std=0.02)
            for i in range(4)
        ]
        engine = Engine(model, config=EngineConfig(max_num_seqs=args.concurrent))
        for i, path in enumerate(adapter_dirs):
            engine.adapters.load(f"a{i}", path)

        async def measure() -> dict[str, list[float]]:
            rates: dict[str, list[float]] = {name: [] for name in configs}
            async with engine:
                await run_batch(engine, prompts[:2], [None], 4)  # warm-up
                for _ in range(args.repeats):
                    for name, loras in configs.items():
                        start = time.perf_counter()
                        tokens = await run_batch(engine, prompts, loras, args.new_tokens)
                        rates[name].append(tokens / (time.perf_counter() - start))
            return rates

        rates = asyncio.run(measure())
    base = statistics.median(rates["base only"])
    adapter_params = engine.adapters.list()[0].num_parameters
    print(
        f"model {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
        f"{args.concurrent} concurrent x {args.new_tokens} tokens, adapters rank {args.rank} "
        f"({adapter_params / 1e6:.2f}M params each), {args.repeats} repeats"
    )
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:>11}: {rate:8.1f} tok/s  {rate / base:5.2f}x base")


if __name__ == "__main__":
    main()
