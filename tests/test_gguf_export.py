"""`fireside export --gguf` and `fireside quantize`: the files load back into Fireside with the
same tokens (f32 exactly, quantized within a stated tolerance) and serve through the engine;
llama.cpp's gguf-py reads them as the model they came from, and llama.cpp's own loader
(llama-server, when bench/build-llama-cpp.sh has built it) tokenizes, decodes and chats (the
bundled model at int8) as Fireside does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import httpx
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QType

from fireside.cli import main
from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.errors import CheckpointError, TokenizerError
from fireside.model import Pretrained, Tokenizer, Transformer, load_pretrained, save_pretrained
from fireside.model.gguf import GGUF_ARCHITECTURES, PERMUTED, gguf_name, interleave
from fireside.model.gguf_export import write_gguf
from fireside.model.pretrained import default_model_dir
from tests.conftest import tiny_config
from tests.engine_utils import collect, greedy_reference
from tests.gguf_utils import (
    ARCHITECTURES,
    DEQUANTIZED_TOLERANCE,
    MESSAGES,
    Q8_0_LOGITS_TOLERANCE,
    TEXTS,
    dequantized_logits,
    greedy_forward,
    logits,
    relative_error,
)

# The keys llama.cpp's loader (src/llama-model.cpp, llm_load_hparams) reads for these
# architectures without a default.
REQUIRED_KEYS = (
    "general.architecture", "{arch}.context_length", "{arch}.embedding_length",
    "{arch}.block_count", "{arch}.feed_forward_length", "{arch}.attention.head_count",
    "{arch}.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model", "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
)  # fmt: skip


def export(model: Path, out: Path, dtype: str = "f32") -> Path:
    assert main(["export", "--gguf", str(out), str(model), "--dtype", dtype]) == 0
    return out


def prompt_ids(bundle: Pretrained) -> list[int]:
    return bundle.tokenizer.render_chat(MESSAGES, add_generation_prompt=True).ids


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_an_f32_export_loads_back_as_the_same_model(
    arch: str, model_dirs: dict[str, Path], tmp_path: Path, one_thread: None
) -> None:
    original = load_pretrained(model_dirs[arch])
    loaded = load_pretrained(export(model_dirs[arch], tmp_path / "model.gguf"))
    assert loaded.model.config.rope_scaling == original.model.config.rope_scaling
    assert loaded.model.config.tie_word_embeddings == original.model.config.tie_word_embeddings
    prompt = prompt_ids(original)
    assert prompt_ids(loaded) == prompt
    torch.testing.assert_close(logits(loaded, prompt), logits(original, prompt), rtol=0, atol=0)
    for text in TEXTS:
        assert loaded.tokenizer.encode(text) == original.tokenizer.encode(text)
    assert loaded.tokenizer.chat_template == original.tokenizer.chat_template
    assert loaded.stop_token_ids == original.stop_token_ids


def original_weights(bundle: Pretrained) -> dict[str, torch.Tensor]:
    """The model's tensors as llama.cpp's names and layout hold them."""
    cfg = bundle.model.config
    arch = GGUF_ARCHITECTURES[cfg.architecture]
    out = {}
    for hf, w in bundle.model.state_dict().items():
        if hf == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if arch in PERMUTED and ".q_proj." in hf:
            w = interleave(w, cfg.num_attention_heads)
        elif arch in PERMUTED and ".k_proj." in hf:
            w = interleave(w, cfg.num_key_value_heads)
        name = gguf_name(hf)
        assert name is not None, hf
        out[name] = w.float()
    return out


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_gguf_py_reads_an_export_as_llama_cpp_expects(
    arch: str, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """llama.cpp's gguf-py (the `gguf` package, the version llama.cpp pins) reads the file:
    the keys llama.cpp requires, only tensor names llama.cpp knows for the architecture, and
    every tensor dequantized by gguf-py's own code equal to the model's weight."""
    original = load_pretrained(model_dirs[arch])
    path = export(model_dirs[arch], tmp_path / "model.gguf")
    reader = gguf.GGUFReader(path)
    name = GGUF_ARCHITECTURES[arch]
    for key in REQUIRED_KEYS:
        assert key.format(arch=name) in reader.fields, key
    assert reader.fields["general.architecture"].contents() == name
    assert reader.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    model_arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == name)
    known = {
        gguf.TENSOR_NAMES[t].format(bid=i)
        for t in gguf.MODEL_TENSORS[model_arch]
        for i in range(original.model.config.num_hidden_layers)
    }
    weights = original_weights(original)
    stored = {t.name: t for t in reader.tensors}
    assert set(stored) - {"rope_freqs.weight"} == set(weights)
    for tensor_name, t in stored.items():
        assert tensor_name.rsplit(".", 1)[0] in known, tensor_name
        if tensor_name in weights:
            got = gguf.quants.dequantize(t.data, t.tensor_type)
            np.testing.assert_array_equal(got, weights[tensor_name].numpy())


def test_a_tokenizer_llama_cpp_cannot_split_alike_is_refused_saying_what_is_needed(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    from tokenizers import Regex, pre_tokenizers

    odd = Tokenizer.from_dir(_saved_tokenizer(tokenizer, tmp_path))
    odd.backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{L}{1,4}|\p{N}|\s+|[^\s\p{L}\p{N}]+"), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    torch.manual_seed(0)
    model = Transformer(tiny_config(odd.vocab_size))
    save_pretrained(model, odd, tmp_path / "odd")
    with pytest.raises(TokenizerError, match=r"none of llama\.cpp's named pre-tokenizers") as e:
        write_gguf(load_pretrained(tmp_path / "odd"), tmp_path / "odd.gguf")
    assert "src/llama-vocab.cpp" in str(e.value)
    assert not (tmp_path / "odd.gguf").exists()


def _saved_tokenizer(tokenizer: Tokenizer, tmp_path: Path) -> Path:
    tokenizer.save(tmp_path / "tok")
    return tmp_path / "tok"


# -- llama.cpp's own loader -----------------------------------------------------------------


def llama_server_binary() -> Path:
    path = Path(os.environ.get("LLAMA_CPP_DIR", "/tmp/fireside-llama-cpp"))
    binary = path / "build" / "bin" / "llama-server"
    if not binary.is_file():
        pytest.skip(f"llama.cpp's llama-server is not built at {binary} (bench/build-llama-cpp.sh)")
    return binary


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[Any]:
    """start(path) -> base URL of llama-server on that file (stopped after the test)."""
    binary = llama_server_binary()
    procs: list[subprocess.Popen[bytes]] = []

    def start(model: Path) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        log = tmp_path / f"llama-server-{port}.log"
        cmd = [str(binary), "-m", str(model), "--port", str(port), "-t", "1", "-c", "512"]
        cmd += ["-ctk", "f32", "-ctv", "f32"]  # Fireside's KV cache is fp32 too
        with log.open("w") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and procs[-1].poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    return url
            time.sleep(0.1)
        raise AssertionError(f"llama-server did not start on {model}:\n{log.read_text()[-3000:]}")

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def llama_cpp_greedy(url: str, prompt: list[int], max_tokens: int) -> list[int]:
    body = {
        "prompt": prompt, "n_predict": max_tokens, "ignore_eos": True, "temperature": 0,
        "samplers": ["temperature"], "return_tokens": True,
    }  # fmt: skip
    r = httpx.post(f"{url}/completion", json=body, timeout=120)
    return list(r.json()["tokens"])


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_llama_cpp_loads_an_export_and_decodes_as_fireside(
    arch: str, model_dirs: dict[str, Path], tmp_path: Path, llama_server: Any, one_thread: None
) -> None:
    original = load_pretrained(model_dirs[arch])
    url = llama_server(export(model_dirs[arch], tmp_path / "model.gguf"))
    for text in TEXTS:
        r = httpx.post(f"{url}/tokenize", json={"content": text, "add_special": False})
        assert r.json()["tokens"] == original.tokenizer.encode(text), text
    prompt = prompt_ids(original)
    assert llama_cpp_greedy(url, prompt, 12) == greedy_reference(original.model, prompt, 12)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_llama_cpp_decodes_a_fireside_quantize_file_as_fireside_does(
    dtype: str,
    tokenizer: Tokenizer,
    tmp_path: Path,
    llama_server: Any,
    ggml_kernels: None,
    one_thread: None,
) -> None:
    """llama.cpp's greedy tokens on the file are Fireside's choices, or within a hair of them:
    the two round activations and order sums differently, which decides near-ties (seen: a gap
    of 0.008 between the top two logits that the exact fp32 result puts the other way)."""
    out = tmp_path / f"{dtype}.gguf"
    source = wide_model_dir(tokenizer, tmp_path)
    assert main(["quantize", str(source), str(out), "--dtype", dtype]) == 0
    loaded = load_pretrained(out)
    prompt = prompt_ids(loaded)
    theirs = llama_cpp_greedy(llama_server(out), prompt, 12)
    # Fireside's logits at every step of llama.cpp's sequence (teacher forcing).
    steps = logits(loaded, prompt + theirs)[len(prompt) - 1 : -1]
    for step, token in zip(steps, theirs, strict=True):
        gap = float(step.max() - step[token])
        assert gap <= 0.02 * float(step.max() - step.min()), (token, int(step.argmax()), gap)
    assert sum(int(s.argmax()) == t for s, t in zip(steps, theirs, strict=True)) >= 10


# -- quantized files -------------------------------------------------------------------------


def engine_greedy(bundle: Pretrained, prompt: list[int], max_tokens: int) -> list[int]:
    async def run() -> list[int]:
        engine = Engine(bundle.model, None, EngineConfig(max_num_seqs=4))
        await engine.start()
        try:
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
            got = await collect(engine, prompt, params, "q")
            return got.tokens[0]
        finally:
            await engine.shutdown()

    return asyncio.run(run())


def block_bound(w: np.ndarray[Any, Any], block: int = 32) -> np.ndarray[Any, Any]:
    """Q8_0's largest rounding error for each weight: half its block's scale (max |w| / 127),
    and a little for the scale itself being stored as fp16."""
    amax = np.abs(w.reshape(*w.shape[:-1], -1, block)).max(axis=-1, keepdims=True)
    return np.broadcast_to(amax / 127 * 0.6 + 1e-7, (*amax.shape[:-1], block)).reshape(w.shape)


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_a_q8_0_export_holds_ggml_blocks_and_loads_back_close(
    arch: str, model_dirs: dict[str, Path], tmp_path: Path, ggml_kernels: None, one_thread: None
) -> None:
    original = load_pretrained(model_dirs[arch])
    path = export(model_dirs[arch], tmp_path / "model.gguf", "q8_0")
    weights = original_weights(original)
    for t in gguf.GGUFReader(path).tensors:
        if t.name not in weights:
            continue
        weight = weights[t.name].numpy()
        stored = gguf.quants.dequantize(t.data, t.tensor_type)
        if weight.ndim == 1:
            assert t.tensor_type == QType.F32
            np.testing.assert_array_equal(stored, weight)
        else:  # gguf-py's decoder reads ggml's blocks back as the weights they round
            assert t.tensor_type == QType.Q8_0, t.name
            assert (np.abs(stored - weight) <= block_bound(weight)).all(), t.name

    loaded = load_pretrained(path)  # q and k rows of `llama` reordered as byte ranges
    prompt = prompt_ids(original)
    got = logits(loaded, prompt)
    decoded = dequantized_logits(path, original.model, prompt)
    assert relative_error(got, decoded) < DEQUANTIZED_TOLERANCE
    assert relative_error(got, logits(original, prompt)) < Q8_0_LOGITS_TOLERANCE


def wide_model_dir(tokenizer: Tokenizer, tmp_path: Path, **overrides: Any) -> Path:
    """A tiny Llama whose rows are 256 wide or more: Q4_K, Q5_K and Q6_K blocks are 256. Its
    weights are of std 0.05: at 0.5 a model this wide amplifies any rounding many times over
    (4-bit types 13-14% off their own decoded weights' logits, against 1.6-2.4% here)."""
    torch.manual_seed(0)
    cfg = tiny_config(
        tokenizer.vocab_size, hidden_size=256, intermediate_size=512, head_dim=64, **overrides
    )
    model = Transformer(cfg)
    model.init_weights(std=0.05)
    save_pretrained(model, tokenizer, tmp_path / "wide")
    return tmp_path / "wide"


MIXED = {
    "model.embed_tokens.weight": QType.Q6_K,
    "lm_head.weight": QType.Q8_0,
    "self_attn.q_proj.weight": QType.Q4_K,
    "self_attn.k_proj.weight": QType.Q5_K,
    "self_attn.v_proj.weight": QType.Q6_K,
    "self_attn.o_proj.weight": QType.Q4_0,
    "mlp.gate_proj.weight": QType.Q4_K,
    "mlp.up_proj.weight": QType.F16,
    "mlp.down_proj.weight": QType.BF16,
}


def test_a_file_mixing_quantized_types_loads_each_as_written(
    tokenizer: Tokenizer, tmp_path: Path, ggml_kernels: None, one_thread: None
) -> None:
    """Q4_K_M files mix types per tensor; this one mixes every type Fireside runs, each
    written by ggml's own quantizers (quantize_blocks), q and k rows in llama's order."""
    from fireside.model import quantized

    bundle = load_pretrained(wide_model_dir(tokenizer, tmp_path))
    types = {
        name: next(t for suffix, t in MIXED.items() if name.endswith(suffix))
        for name, p in bundle.model.state_dict().items()
        if p.ndim == 2
    }
    path = tmp_path / "mixed.gguf"
    write_gguf(bundle, path, tensor_types=types)
    stored = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert all(stored[gguf_name(hf)] == t for hf, t in types.items())  # type: ignore[index]

    loaded = load_pretrained(path)
    held = {m.qtype.name for m in quantized.matrices(loaded.model)}
    assert held == {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16", "BF16"}
    assert all(p.ndim == 1 for p in loaded.model.parameters())
    prompt = prompt_ids(bundle)
    decoded = dequantized_logits(path, bundle.model, prompt)
    assert relative_error(logits(loaded, prompt), decoded) < DEQUANTIZED_TOLERANCE


@pytest.mark.parametrize(
    ("dtype", "projection", "embedding"), [("int4", "Q4_K", "Q6_K"), ("int8", "Q8_0", "Q8_0")]
)
def test_fireside_quantize_writes_a_gguf_that_serves_through_the_engine(
    dtype: str,
    projection: str,
    embedding: str,
    tokenizer: Tokenizer,
    tmp_path: Path,
    ggml_kernels: None,
    one_thread: None,
) -> None:
    source = wide_model_dir(tokenizer, tmp_path, tie_word_embeddings=True)
    out = tmp_path / f"{dtype}.gguf"
    assert main(["quantize", str(source), str(out), "--dtype", dtype]) == 0
    stored = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert stored["token_embd.weight"] == embedding
    assert "output.weight" not in stored  # the tied head stays tied
    assert {k for k, v in stored.items() if v == projection} >= {
        f"blk.{i}.{p}.weight" for i in range(2) for p in ("attn_q", "ffn_down")
    }
    assert out.stat().st_size < 0.35 * sum(f.stat().st_size for f in source.glob("*.safetensors"))

    original = load_pretrained(source)
    loaded = load_pretrained(out)
    prompt = prompt_ids(loaded)
    got = logits(loaded, prompt)
    decoded = dequantized_logits(out, original.model, prompt)
    assert relative_error(got, decoded) < DEQUANTIZED_TOLERANCE
    if dtype == "int8":  # measured 2.2%; int4 moves this random model's logits ~25%
        assert relative_error(got, logits(original, prompt)) < 0.05
    direct = greedy_forward(loaded.model, prompt, 10)  # before the engine lays it out
    assert engine_greedy(loaded, prompt, 10) == direct


def test_a_quantized_model_is_not_exported_again(
    tokenizer: Tokenizer, tmp_path: Path, ggml_kernels: None
) -> None:
    source = wide_model_dir(tokenizer, tmp_path)
    out = tmp_path / "int8.gguf"
    assert main(["quantize", str(source), str(out), "--dtype", "int8"]) == 0
    with pytest.raises(CheckpointError, match="start from a float model"):
        write_gguf(load_pretrained(out), tmp_path / "again.gguf", "int4")
    with pytest.raises(CheckpointError, match="runs on CPU only"):
        load_pretrained(out, device="cuda")  # refused before anything touches CUDA


def test_llama_cpps_own_gguf_dump_reads_a_quantized_export(
    converter: Path, tokenizer: Tokenizer, tmp_path: Path, ggml_kernels: None
) -> None:
    """gguf_dump.py from the gguf-py vendored in llama.cpp's own sources (the copy its
    converter uses) lists the file's metadata and tensors as written."""
    out = tmp_path / "int4.gguf"
    source = wide_model_dir(tokenizer, tmp_path)
    assert main(["quantize", str(source), str(out), "--dtype", "int4"]) == 0
    script = converter / "gguf-py" / "gguf" / "scripts" / "gguf_dump.py"
    env = {**os.environ, "PYTHONPATH": str(converter / "gguf-py")}
    proc = subprocess.run(
        [sys.executable, str(script), "--json", str(out)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dump = json.loads(proc.stdout)
    assert dump["metadata"]["general.architecture"]["value"] == "llama"
    assert dump["metadata"]["tokenizer.ggml.pre"]["value"] == "qwen2"
    assert dump["metadata"]["general.file_type"]["value"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert dump["tensors"]["blk.0.attn_q.weight"]["type"] == "Q4_K"
    assert dump["tensors"]["blk.0.attn_q.weight"]["shape"] == [256, 256]
    assert dump["tensors"]["output.weight"]["type"] == "Q6_K"


@pytest.mark.parametrize(
    ("dtype", "types"),
    [("f16", {"F16"}), ("q4_0", {"Q4_0"}), ("q4_k", {"Q4_K"})],
)
def test_export_dtypes_write_their_type_and_load(
    dtype: str,
    types: set[str],
    tokenizer: Tokenizer,
    tmp_path: Path,
    ggml_kernels: None,
    one_thread: None,
) -> None:
    source = wide_model_dir(tokenizer, tmp_path)
    path = export(source, tmp_path / f"{dtype}.gguf", dtype)
    stored = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert {v for k, v in stored.items() if "norm" not in k} == types
    assert {v for k, v in stored.items() if "norm" in k} == {"F32"}
    original = load_pretrained(source)
    loaded = load_pretrained(path)
    prompt = prompt_ids(original)
    decoded = dequantized_logits(path, original.model, prompt)
    assert relative_error(logits(loaded, prompt), decoded) < DEQUANTIZED_TOLERANCE


def test_llama_cpp_chats_with_the_bundled_model_quantized_as_fireside_does(
    tmp_path: Path, llama_server: Any, ggml_kernels: None, one_thread: None
) -> None:
    """The bundled (trained) model at int8: llama-server renders the file's chat template with
    its own Jinja engine, stops at the file's end-of-turn token and answers as Fireside does."""
    out = tmp_path / "fireside-tiny-int8.gguf"
    assert main(["quantize", str(default_model_dir()), str(out), "--dtype", "int8"]) == 0
    bundle = load_pretrained(out)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = bundle.tokenizer.render_chat(messages, add_generation_prompt=True).ids
    reply = []
    for token in greedy_forward(bundle.model, ids, 24):
        if token in bundle.stop_token_ids:
            break
        reply.append(token)
    body = {"messages": messages, "temperature": 0, "max_tokens": 24}
    r = httpx.post(f"{llama_server(out)}/v1/chat/completions", json=body, timeout=120)
    assert r.json()["usage"]["prompt_tokens"] == len(ids)
    # Message content without special tokens' text, as both servers give it (the bundled model
    # may answer with call markup even where no tools are offered).
    content = bundle.tokenizer.decode(reply, skip_special_tokens=True)
    assert r.json()["choices"][0]["message"]["content"] == content
