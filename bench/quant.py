"""Quantized decode: fp32 against int8 (Q8_0) and int4 (Q4_K/Q4_0) weights through the engine.

    .venv/bin/python bench/quant.py            # 134M- and ~1B-shaped random Llamas + bundled model
    .venv/bin/python bench/quant.py --tiny     # small shapes and few tokens: shows that it runs

For each model shape, prints single-stream and 8-concurrent decode tokens/s and the resident
weight memory of fp32, int8 and int4 (`fireside serve --quantize`), with ratios against fp32
measured in the same run: the three engines alternate within each repeat, so a noisy spell
slows them alike; figures are medians over repeats. Then the bundled model's perplexity and
bits per byte on held-out text, fp32 against each quantization (and int4 with its LM head and
embeddings at 4 bits too, to show why they stay at 8). The held-out text is `--text FILES`, or
by default the standard-library files the training mix holds out (fireside.data.mix.held_out),
which no Fireside model trains on. Goals (issue 22): int8 >= 2x and int4 >= 3.5x fp32 single
stream; perplexity +<= 1% (int8), +<= 5% (int4). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine import (
    allocator_name,
    bench_model,
    bench_prompts,
    fireside_generate,
    median_time,
    read_bandwidth,
)
from fireside.allocator import reexec_with_jemalloc
from fireside.data.mix import held_out
from fireside.data.prepare import clean
from fireside.engine import Engine, EngineConfig
from fireside.eval.bpb import bits_per_byte, tokenize_documents
from fireside.kernels import ggml
from fireside.model import Transformer, load_pretrained, quantized
from fireside.model.pretrained import default_model_dir

DTYPES = ("fp32", "int8", "int4")
SHAPES = {
    # bench/engine.py's default shape, and a ~1B Llama (TinyLlama's widths, 16 layers).
    "134M": {"layers": 12, "hidden": 768, "intermediate": 2048, "vocab": 32000},
    "1B": {"layers": 16, "hidden": 2048, "intermediate": 5632, "vocab": 32000},
}
TINY_SHAPES = {
    "tiny-a": {"layers": 2, "hidden": 256, "intermediate": 512, "vocab": 4096},
    "tiny-b": {"layers": 2, "hidden": 512, "intermediate": 1024, "vocab": 4096},
}


def weight_bytes(model: Transformer) -> int:
    quant, dense = quantized.resident_bytes(model)
    return quant + dense


def shape_model(args: argparse.Namespace, shape: dict[str, int], dtype: str) -> Transformer:
    ns = argparse.Namespace(**vars(args), **shape)
    model = bench_model(ns)
    if dtype != "fp32":
        quantized.quantize_model(model, dtype)
    return model


def bench_shape(args: argparse.Namespace, name: str, shape: dict[str, int]) -> None:
    n = args.new_tokens
    ns = argparse.Namespace(**vars(args), **shape)
    prompts = bench_prompts(ns, args.concurrent)
    engines: dict[str, Engine] = {}
    memory: dict[str, int] = {}
    for dtype in DTYPES:
        model = shape_model(args, shape, dtype)
        memory[dtype] = weight_bytes(model)
        engine = Engine(model, None, EngineConfig(max_num_seqs=args.concurrent))
        asyncio.run(engine.start())
        asyncio.run(fireside_generate(engine, prompts[:2], 8))  # warm-up
        engines[dtype] = engine
    params = sum(p.numel() for p in bench_model(ns).parameters())

    single: dict[str, list[float]] = {d: [] for d in DTYPES}
    batch: dict[str, list[float]] = {d: [] for d in DTYPES}
    bandwidths = []
    for _ in range(args.repeats):
        bandwidths.append(read_bandwidth())
        for dtype, engine in engines.items():
            t = median_time(lambda e=engine: asyncio.run(fireside_generate(e, prompts[:1], n)), 1)
            single[dtype].append(n / t)
            t = median_time(lambda e=engine: asyncio.run(fireside_generate(e, prompts, n)), 1)
            batch[dtype].append(len(prompts) * n / t)
    for engine in engines.values():
        asyncio.run(engine.shutdown())

    bandwidth = statistics.median(bandwidths)
    print(
        f"\n{name}: {params / 1e6:.0f}M parameters ({shape['layers']} layers, hidden {shape['hidden']}, "
        f"intermediate {shape['intermediate']}, vocab {shape['vocab']}); read bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s; {args.prompt_tokens}-token prompts, {n} new tokens, "
        f"medians of {args.repeats}"
    )
    print(
        f"{'dtype':6} {'weights MiB':>12} {'1 stream tok/s':>15} {'vs fp32':>8} "
        f"{'roofline':>9} {f'{args.concurrent} concurrent tok/s':>22} {'vs fp32':>8}"
    )
    base1 = statistics.median(single["fp32"])
    baseN = statistics.median(batch["fp32"])
    for dtype in DTYPES:
        s, b = statistics.median(single[dtype]), statistics.median(batch[dtype])
        roof = bandwidth / memory[dtype]  # every weight read once a token (embeddings included)
        print(
            f"{dtype:6} {memory[dtype] / 2**20:12.1f} {s:15.1f} {s / base1:7.2f}x "
            f"{s / roof:9.0%} {b:22.1f} {b / baseN:7.2f}x"
        )


def stdlib_held_out(limit_chars: int) -> list[str]:
    """Standard-library files the training mix holds out (hashed out of every mix)."""
    texts, size = [], 0
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            text = clean(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if text and held_out(text):
            texts.append(text)
            size += len(text)
            if size >= limit_chars:
                break
    return texts


def limited(
    docs: Iterator[tuple[list[int], int]], max_tokens: int
) -> Iterator[tuple[list[int], int]]:
    seen = 0
    for ids, size in docs:
        if seen >= max_tokens:
            return
        yield ids, size
        seen += len(ids)


def bench_perplexity(args: argparse.Namespace) -> None:
    texts = (
        [Path(t).read_text(encoding="utf-8") for t in args.text]
        if args.text
        else stdlib_held_out(args.ppl_tokens * 4)
    )
    source = ", ".join(args.text) if args.text else f"{len(texts)} held-out standard-library files"
    print(f"\nbundled model ({default_model_dir().name}), held-out text: {source}")
    print(f"{'weights':28} {'MiB':>7} {'bits/byte':>10} {'perplexity':>11} {'vs fp32':>8}")
    base = None
    variants: list[tuple[str, str | None, ggml.QType | None]] = [
        ("fp32", None, None),
        ("int8 (Q8_0)", "int8", None),
        ("int4 (head, embed Q8_0)", "int4", None),
        ("int4 (head, embed Q4_0 too)", "int4", ggml.QType.Q4_0),
    ]
    for label, scheme, head in variants:
        bundle = load_pretrained(default_model_dir(), device="cpu")
        model = bundle.model
        if scheme is not None:
            quantized.quantize_model(model, scheme, head_type=head)
        docs = limited(tokenize_documents(bundle.tokenizer, texts), args.ppl_tokens)
        result = bits_per_byte(model, docs, context=args.ppl_context)
        ppl = math.exp(result.nats_per_token)
        base = base or ppl
        print(
            f"{label:28} {weight_bytes(model) / 2**20:7.1f} {result.bits_per_byte:10.4f} "
            f"{ppl:11.3f} {ppl / base - 1:+7.2%}"
        )
    print(f"({result.tokens} tokens, {result.documents} documents)")


def main() -> None:
    reexec_with_jemalloc()  # as `fireside serve` runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", choices=[*SHAPES, *TINY_SHAPES], help="default: all")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch (and ggml) threads (default: torch's)")
    parser.add_argument("--text", nargs="*", help="held-out text files for the perplexity")
    parser.add_argument("--ppl-tokens", type=int, default=100_000, help="held-out tokens scored")
    parser.add_argument("--ppl-context", type=int, default=512)
    parser.add_argument("--no-perplexity", action="store_true")
    parser.add_argument("--no-speed", action="store_true", help="the perplexity table alone")
    parser.add_argument(
        "--tiny", action="store_true", help="small shapes, few tokens (a smoke run)"
    )
    args = parser.parse_args()
    if args.tiny:
        args.new_tokens, args.repeats, args.ppl_tokens = 8, 1, 2000
    reason = ggml.unavailable_reason()
    if reason is not None:
        sys.exit(f"bench/quant.py: {reason}")
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = TINY_SHAPES if args.tiny else SHAPES
    chosen = {k: v for k, v in {**SHAPES, **TINY_SHAPES}.items() if k in (args.shapes or shapes)}
    print(f"{torch.get_num_threads()} threads; {allocator_name()}; {ggml.info()}")
    for name, shape in {} if args.no_speed else chosen.items():
        bench_shape(
            argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "shapes"}),
            name,
            shape,
        )
    if not args.no_perplexity:
        bench_perplexity(args)


if __name__ == "__main__":
    main()
