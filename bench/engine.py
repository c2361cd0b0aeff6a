"""Engine benchmark: Fireside's engine against `transformers` generate on the same weights.

    .venv/bin/python bench/engine.py                   # ~100M-parameter random Llama, fp32, CPU
    .venv/bin/python bench/engine.py --shape bundled   # the bundled model's shape (Qwen3, 24M)
    .venv/bin/python bench/engine.py --neighbour       # beside one busy process

Prints single-stream decode tokens/s (with its fraction of the memory-bandwidth roofline:
measured read bandwidth / bytes of weights read per token) and the throughput of N concurrent
requests against transformers serving them one at a time. Every figure is a median over
repeats, and every ratio is against a baseline measured in the same run. Both sides run under
the allocator `fireside serve` uses (jemalloc where installed; FIRESIDE_JEMALLOC=0 for glibc's).

`--neighbour` keeps one other process busy (a pure-Python spin loop, one core's worth) through
every measurement, baseline and Fireside alike: a server shares its cores with the app, the
database and the tool sandbox, and decode must hold up beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from fireside.allocator import reexec_with_jemalloc, running_jemalloc
from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.model import ModelConfig, Transformer
from fireside.model.checkpoint import save_model


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth(repeats: int = 7) -> float:
    """Bytes per second a large reduction streams from memory (far beyond any cache)."""
    big = torch.ones(256 * 2**20)  # 1 GiB of fp32
    big.sum()  # first touch
    return big.numel() * 4 / median_time(big.sum, repeats)


# The bundled model's shape (fireside/assets/fireside-tiny): Qwen3, 24.4M parameters.
BUNDLED_SHAPE = {"layers": 7, "hidden": 448, "intermediate": 1216, "vocab": 8192}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model and workload, shared with bench/llama_cpp.py so both measure the same thing."""
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)


def bench_config(args: argparse.Namespace) -> ModelConfig:
    bundled = getattr(args, "shape", "llama") == "bundled"
    if bundled:
        for name, value in BUNDLED_SHAPE.items():
            setattr(args, name, value)
    return ModelConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        head_dim=64,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5 if bundled else 1e-6,
        qk_norm=bundled,
        architecture="Qwen3ForCausalLM" if bundled else "LlamaForCausalLM",
    )


def bench_model(args: argparse.Namespace) -> Transformer:
    """The random Llama every run builds: the same seed gives the same weights."""
    torch.manual_seed(0)
    model = Transformer(bench_config(args))
    model.init_weights()
    return model.eval()


def bench_prompts(args: argparse.Namespace, count: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randint(0, args.vocab, (args.prompt_tokens,), generator=g).tolist()
        for _ in range(count)
    ]


def decode_weight_bytes(model: Transformer) -> int:
    """Bytes of weights a decode step reads: every weight once, except the embedding table
    (one row)."""
    params = sum(p.numel() for p in model.parameters())
    return (params - model.config.vocab_size * model.config.hidden_size) * 4


def hf_generate(hf: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = hf.generate(  # type: ignore[operator]
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    return list(out[0, len(prompt) :].tolist())


async def fireside_generate(engine: Engine, prompts: list[list[int]], new_tokens: int) -> int:
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)

    async def one(i: int, prompt: list[int]) -> int:
        n = 0
        async for out in engine.generate(prompt, params, f"bench-{i}"):
            n += len(out.samples[0].token_ids)
        return n

    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return sum(counts)


def fireside_greedy(engine: Engine, prompt: list[int], new_tokens: int) -> list[int]:
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    tokens: list[int] = []

    async def run() -> None:
        async for out in engine.generate(prompt, params, "check"):
            tokens.extend(out.samples[0].token_ids)

    asyncio.run(run())
    return tokens


def _spin() -> None:
    x = 0
    while True:
        x += 1


@contextmanager
def neighbour(enabled: bool) -> Iterator[None]:
    """One busy process (a pure-Python loop, one core's worth) while the block runs."""
    if not enabled:
        yield
        return
    proc = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    proc.start()
    try:
        yield
    finally:
        proc.kill()
        proc.join()


def allocator_name() -> str:
    return "jemalloc" if running_jemalloc() else "glibc malloc"


def main() -> None:
    reexec_with_jemalloc()  # as `fireside serve` runs (fireside.allocator)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument(
        "--shape",
        choices=["llama", "bundled"],
        default="llama",
        help="llama: a Llama of --layers/--hidden/...; bundled: the bundled model's shape "
        "(Qwen3 with per-head query/key norms, 7 layers, hidden 448, vocab 8192), which "
        "overrides those four",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="Fireside serves the weights quantized (as `fireside serve --quantize`); "
        "transformers keeps fp32, so the ratios compare the two deployments, and the roofline "
        "is the quantized bytes'",
    )
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--neighbour",
        action="store_true",
        help="keep one other process busy on one core through every measurement",
    )
    parser.add_argument(
        "--hf-sequential",
        type=int,
        default=4,
        help="requests transformers serves one at a time to measure its sequential throughput",
    )
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    model = bench_model(args)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp))
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()

    params = sum(p.numel() for p in model.parameters())
    weight_bytes = decode_weight_bytes(model)
    if args.quantize:
        from fireside.model import quantized

        quantized.quantize_model(model, args.quantize)
        embedding = model.model.embed_tokens
        # Every quantized matrix once a token, except the embedding's (one row is read), where
        # the head is not tied to it.
        weight_bytes = sum(
            q.nbytes
            for q in quantized.matrices(model)
            if model.config.tie_word_embeddings or q is not getattr(embedding, "matrix", None)
        )
    prompts = bench_prompts(args, args.concurrent)
    n = args.new_tokens

    engine = Engine(model, None, EngineConfig(max_num_seqs=max(args.concurrent, 1)))
    asyncio.run(engine.start())
    k = min(args.hf_sequential, args.concurrent)

    def fs_run(batch: list[list[int]]) -> None:
        asyncio.run(fireside_generate(engine, batch, n))

    def hf_run(batch: list[list[int]]) -> None:
        with torch.inference_mode():
            for p in batch:
                hf_generate(hf, p, n)

    with torch.inference_mode():
        hf_generate(hf, prompts[0], 8)  # warm-up
        hf_out = hf_generate(hf, prompts[0], n)
    asyncio.run(fireside_generate(engine, prompts[:2], 8))  # warm-up
    fs_out = fireside_greedy(engine, prompts[0], n)
    # Baseline and Fireside alternate within each repeat, so a shared, busy machine slows both
    # alike rather than whichever happened to run during a noisy spell.
    times: dict[str, list[float]] = {"hf1": [], "fs1": [], "hfk": [], "fsN": []}
    bandwidths = []
    for _ in range(args.repeats):
        # The roofline is the machine's, so the bandwidth is read without the neighbour.
        bandwidths.append(read_bandwidth())
        with neighbour(args.neighbour):
            times["hf1"].append(median_time(lambda: hf_run(prompts[:1]), 1))
            times["fs1"].append(median_time(lambda: fs_run(prompts[:1]), 1))
            times["hfk"].append(median_time(lambda: hf_run(prompts[:k]), 1))
            times["fsN"].append(median_time(lambda: fs_run(prompts), 1))
    asyncio.run(engine.shutdown())
    hf_single = n / statistics.median(times["hf1"])
    fs_single = n / statistics.median(times["fs1"])
    hf_seq = k * n / statistics.median(times["hfk"])
    fs_batch = len(prompts) * n / statistics.median(times["fsN"])
    same = fs_out == hf_out
    bandwidth = statistics.median(bandwidths)
    roofline = bandwidth / weight_bytes
    print(
        f"model: {params / 1e6:.1f}M parameters {args.quantize or 'fp32'} ({args.shape} shape, {args.layers} layers, "
        f"hidden {args.hidden}, vocab {args.vocab}; {weight_bytes / 1e6:.0f} MB of weights read "
        f"per token); {torch.get_num_threads()} threads; {allocator_name()}; read bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s -> roofline {roofline:.1f} tokens/s; "
        f"{args.prompt_tokens}-token prompts, {n} new tokens, medians of {args.repeats}"
        + ("; one busy neighbour process throughout" if args.neighbour else "")
    )

    rows = [
        ("single stream, transformers", hf_single, 1.0, hf_single / roofline),
        ("single stream, fireside", fs_single, fs_single / hf_single, fs_single / roofline),
        (f"{args.concurrent} requests, transformers one at a time", hf_seq, 1.0, None),
        (f"{args.concurrent} concurrent, fireside", fs_batch, fs_batch / hf_seq, None),
    ]
    print(f"\n{'':46} {'tokens/s':>9} {'vs HF':>7} {'roofline':>9}")
    for name, tps, ratio, roof in rows:
        roof_s = f"{roof:9.0%}" if roof is not None else f"{'':9}"
        print(f"{name:46} {tps:9.1f} {ratio:6.2f}x {roof_s}")
    print(f"\ngreedy tokens identical to transformers: {same}")


if __name__ == "__main__":
    main()
