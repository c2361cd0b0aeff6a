"""llama.cpp benchmark: Fireside against llama.cpp serving the same GGUF file, CPU.

    bench/build-llama-cpp.sh                          # once: llama.cpp's CPU tools, from PyPI's sdist
    .venv/bin/python bench/llama_cpp.py               # bench/engine.py's random Llama, f32, 2 threads
    .venv/bin/python bench/llama_cpp.py --dtype q4_0  # the same model quantized by llama.cpp

Saves the model of bench/engine.py (same config, seed and prompts) as an HF directory with a
synthetic byte-level tokenizer, converts it with llama.cpp's own convert_hf_to_gguf.py (f32)
and, for --dtype q8_0|q4_0, quantizes that with llama.cpp's llama-quantize (which keeps the
output head at Q6_K, as it does for every model). The one file is served by both programs:
`fireside serve --model FILE.gguf` and llama-server. Checks that Fireside's greedy tokens on the
file are llama.cpp's, then times one request and N concurrent requests on each, through each
server's HTTP completion route: every request a 16-token prompt (token ids) and 128 greedy new
tokens, timed from submission to the last token. Figures are medians over repeats, llama.cpp
and Fireside alternate within each repeat, and ratios are Fireside / llama.cpp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import torch
from api import free_port, wait_healthy
from engine import (
    add_model_args,
    allocator_name,
    bench_config,
    bench_model,
    bench_prompts,
    fireside_greedy,
    median_time,
    read_bandwidth,
)
from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from fireside.allocator import reexec_with_jemalloc
from fireside.engine import Engine, EngineConfig
from fireside.model import Tokenizer, load_pretrained, save_pretrained
from fireside.model.tokenizer import SPLIT_PATTERN

DTYPES = {"f32": None, "q8_0": "Q8_0", "q4_0": "Q4_0"}  # --dtype -> llama-quantize's type
# llama.cpp's converter names a byte-level BPE's pre-tokenizer by hashing how it tokenizes a
# test text, and knows only published models' hashes; the synthetic tokenizer splits as Fireside's
# (qwen2's split), so the converter is told that name.
CONVERT = """
import runpy, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
sys.argv = [root + "/convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def synthetic_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE of exactly `vocab_size` tokens for the random model: an end-of-text
    token, the 256 bytes and merges of byte pairs. The converter wants a tokenizer; the
    benchmark itself passes token ids."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size > 1 + len(alphabet) ** 2 + len(alphabet):
        sys.exit(f"--vocab {vocab_size} is larger than this synthetic tokenizer makes")
    vocab = {"<|endoftext|>": 0, **{b: i + 1 for i, b in enumerate(alphabet)}}
    merges = []
    pairs = ((a, b) for a in alphabet for b in alphabet)
    while len(vocab) < vocab_size:
        a, b = next(pairs)
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    backend = HFTokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>"])
    end = "<|endoftext|>"
    return Tokenizer(backend, None, {"bos_token": end, "eos_token": end})


def run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({' '.join(cmd[:3])} ...):\n{proc.stderr[-3000:]}")


def make_gguf(args: argparse.Namespace, tmp: Path, llama_cpp: Path) -> Path:
    """The bench model as llama.cpp makes its GGUF files: converted, then quantized."""
    model = bench_model(args)
    hf = tmp / "hf"
    save_pretrained(model, synthetic_tokenizer(args.vocab), hf)
    del model
    f32 = tmp / "bench-f32.gguf"
    source = llama_cpp / "src"
    convert = [sys.executable, "-c", CONVERT, str(source), str(hf), "--outtype", "f32"]
    run([*convert, "--outfile", str(f32)], "llama.cpp's convert_hf_to_gguf.py")
    qtype = DTYPES[args.dtype]
    if qtype is None:
        return f32
    out = tmp / f"bench-{args.dtype}.gguf"
    quantize = llama_cpp / "build" / "bin" / "llama-quantize"
    run([str(quantize), str(f32), str(out), qtype, str(args.threads)], "llama-quantize")
    f32.unlink()
    return out


def decode_bytes(path: Path) -> int:
    """Bytes of weights a decode step reads from the file's tensors: all but the embedding
    table (one row of it)."""
    tensors = gguf.GGUFReader(path).tensors
    return sum(int(t.n_bytes) for t in tensors if t.name != "token_embd.weight")


@contextlib.contextmanager
def fireside_serve(model: Path, log: Path, threads: int, slots: int) -> Iterator[str]:
    """`fireside serve --model FILE.gguf`, API only, on `threads` threads: its URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FIRESIDE_APP": "0"}
    cmd = [
        sys.executable, "-m", "fireside.cli", "serve", "--model", str(model), "--device", "cpu",
        "--served-model-name", "bench", "--port", str(port), "--max-num-seqs", str(slots),
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, lambda: f"{' '.join(cmd)} failed:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def fireside_requests(url: str, prompts: list[list[int]], new_tokens: int) -> int:
    """Greedy completions of `prompts` through /v1/completions, all at once: tokens made."""

    async def go() -> int:
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:

            async def one(prompt: list[int]) -> int:
                body = {
                    "model": "bench", "prompt": prompt, "max_tokens": new_tokens,
                    "temperature": 0, "ignore_eos": True,
                }  # fmt: skip
                reply = await client.post("/v1/completions", json=body)
                reply.raise_for_status()
                return int(reply.json()["usage"]["completion_tokens"])

            return sum(await asyncio.gather(*(one(p) for p in prompts)))

    return asyncio.run(go())


class LlamaServer:
    """llama-server on the GGUF file. The check and the timings both go through it: it takes
    and returns token ids, and batches concurrent requests continuously as Fireside's engine
    does. (llama-batched-bench would skip HTTP, but it sometimes loses its result line: its
    logger drops what is still queued at exit.) Its settings are llama.cpp's defaults, an f16 KV
    cache among them: with an f32 cache like Fireside's, its flash-attention path decodes 25-60%
    slower here, which would understate llama.cpp, and the greedy check agrees either way."""

    def __init__(
        self, binary: Path, model: Path, log: Path, threads: int, slots: int, context: int
    ) -> None:
        port = free_port()
        cmd = [
            str(binary), "-m", str(model), "--port", str(port), "-t", str(threads),
            "-tb", str(threads), "-np", str(slots), "-c", str(slots * context),
        ]  # fmt: skip
        with log.open("w") as out:  # a file, not a pipe: nobody reads it while the server runs
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(
            self.url, self.process, lambda: f"{' '.join(cmd)} failed:\n{log.read_text()[-3000:]}"
        )

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def generate(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        """Greedy continuations of `prompts`, all requested at once."""

        async def run() -> list[list[int]]:
            async with httpx.AsyncClient(base_url=self.url, timeout=600) as client:

                async def one(prompt: list[int]) -> list[int]:
                    body = {
                        "prompt": prompt, "n_predict": new_tokens, "ignore_eos": True,
                        "temperature": 0, "samplers": ["temperature"], "return_tokens": True,
                    }  # fmt: skip
                    reply = await client.post("/completion", json=body)
                    reply.raise_for_status()
                    return list(reply.json()["tokens"])

                return await asyncio.gather(*(one(p) for p in prompts))

        return asyncio.run(run())


def main() -> None:
    reexec_with_jemalloc()  # the in-process check runs as `fireside serve` does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--dtype", choices=list(DTYPES), default="f32")
    parser.add_argument("--parallel", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--threads", type=int, default=2, help="for both servers")
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument(
        "--llama-cpp-dir",
        type=Path,
        default=Path(os.environ.get("LLAMA_CPP_DIR", "/tmp/fireside-llama-cpp")),
        help="where bench/build-llama-cpp.sh built llama.cpp (env LLAMA_CPP_DIR)",
    )
    args = parser.parse_args()
    bin_dir = args.llama_cpp_dir / "build" / "bin"
    needed = [bin_dir / "llama-server", bin_dir / "llama-quantize"]
    needed.append(args.llama_cpp_dir / "src" / "convert_hf_to_gguf.py")
    if not all(p.is_file() for p in needed):
        sys.exit(
            f"{', '.join(str(p) for p in needed if not p.is_file())} not found. Build llama.cpp "
            f"first:\n    LLAMA_CPP_DIR={args.llama_cpp_dir} bench/build-llama-cpp.sh"
        )

    torch.set_num_threads(args.threads)
    prompts = bench_prompts(args, max(args.parallel))
    n, p = args.new_tokens, args.prompt_tokens
    slots = max(args.parallel)
    params = bench_config(args).num_parameters()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        gguf_path = make_gguf(args, tmp, args.llama_cpp_dir)
        weight_bytes = decode_bytes(gguf_path)
        kinds = sorted({t.tensor_type.name for t in gguf.GGUFReader(gguf_path).tensors})
        # The greedy check in this process, on the same file (the HTTP routes return text).
        bundle = load_pretrained(gguf_path)
        engine = Engine(bundle.model, None, EngineConfig(max_num_seqs=2))
        asyncio.run(engine.start())
        try:
            fs_out = fireside_greedy(engine, prompts[0], args.check_tokens)
        finally:
            asyncio.run(engine.shutdown())
        del bundle, engine

        llama = LlamaServer(
            bin_dir / "llama-server",
            gguf_path,
            tmp / "llama-server.log",
            args.threads,
            slots,
            p + n,
        )
        try:
            with fireside_serve(gguf_path, tmp / "fireside.log", args.threads, slots) as url:
                fireside_requests(url, prompts[:2], 8)  # warm-up
                llama_out = llama.generate(prompts[:1], args.check_tokens)[0]

                def llama_run(batch: list[list[int]]) -> None:
                    made = llama.generate(batch, n)
                    assert all(len(t) == n for t in made)

                def fs_run(batch: list[list[int]]) -> None:
                    assert fireside_requests(url, batch, n) == len(batch) * n

                # llama.cpp and Fireside alternate within each repeat, so a shared, busy
                # machine slows both alike rather than whichever ran during a noisy spell.
                sizes = [1, *args.parallel]
                times: dict[tuple[str, int], list[float]] = {}
                bandwidths = []
                for _ in range(args.repeats):
                    bandwidths.append(read_bandwidth())
                    for k in sizes:
                        for side, go in (("llama.cpp", llama_run), ("fireside", fs_run)):
                            t = median_time(functools.partial(go, prompts[:k]), 1)
                            times.setdefault((side, k), []).append(t)
        finally:
            llama.close()

    tps = {key: key[1] * n / statistics.median(t) for key, t in times.items()}
    bandwidth = statistics.median(bandwidths)
    roofline = bandwidth / weight_bytes
    print(
        f"model: {params / 1e6:.0f}M parameters ({args.layers} layers, hidden {args.hidden}, "
        f"vocab {args.vocab}), one GGUF file of {'/'.join(kinds)} tensors "
        f"({weight_bytes / 2**20:.0f} MiB read a token) made by llama.cpp; {args.threads} threads "
        f"for both; fireside serve under {allocator_name()}; read bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s -> roofline {roofline:.1f} tokens/s; "
        f"{p}-token prompts, {n} new tokens, medians of {args.repeats}"
    )
    print(f"\n{'':38} {'tokens/s':>9} {'vs llama.cpp':>13} {'roofline':>9}")
    for k in sizes:
        what = "single stream" if k == 1 else f"{k} sequences"
        base = tps["llama.cpp", k]
        for side in ("llama.cpp", "fireside"):
            roof = f"{tps[side, k] / roofline:9.0%}" if k == 1 else ""
            name = f"{what}, {side}"
            print(f"{name:38} {tps[side, k]:9.1f} {tps[side, k] / base:12.2f}x {roof}")
    agree = 0
    while agree < min(len(fs_out), len(llama_out)) and fs_out[agree] == llama_out[agree]:
        agree += 1
    print(
        f"\ngreedy tokens identical to llama.cpp: {fs_out == llama_out} "
        f"(first {agree} of {len(fs_out)} agree)"
    )


if __name__ == "__main__":
    main()
