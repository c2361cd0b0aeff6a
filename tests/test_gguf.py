"""GGUF files: Fireside-made tiny models converted by llama.cpp's own convert_hf_to_gguf.py load
back with the same config, weights (greedy tokens, logits), tokenizer and chat template, through
`fireside chat` and `fireside serve` too; a Q8_0 file stays quantized and decodes within a
stated tolerance; unknown tensor types, architectures and pre-tokenizers are refused with errors
that name them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fireside.cli import main
from fireside.errors import CheckpointError, FiresideError, TokenizerError
from fireside.model import Pretrained, Transformer, load_pretrained, save_model
from fireside.model.gguf import find_gguf
from fireside.model.gguf_tokenizer import GGUFVocab, build_backend
from tests.api_utils import run_server
from tests.conftest import stdlib_texts, tiny_config
from tests.engine_utils import greedy_reference
from tests.gguf_utils import (
    ARCHITECTURES,
    DEQUANTIZED_TOLERANCE,
    MESSAGES,
    Q8_0_LOGITS_TOLERANCE,
    TEXTS,
    convert,
    dequantized_logits,
    logits,
    relative_error,
)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_an_f32_gguf_loads_as_the_model_it_was_converted_from(
    arch: str, model_dirs: dict[str, Path], gguf_file: Callable[[str, str], Path], one_thread: None
) -> None:
    original = load_pretrained(model_dirs[arch])
    loaded = load_pretrained(gguf_file(arch, "f32"))

    a, b = original.model.config, loaded.model.config
    for name in (
        "architecture", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
        "rms_norm_eps", "rope_theta", "tie_word_embeddings", "attention_bias", "qk_norm",
    ):  # fmt: skip
        assert getattr(b, name) == getattr(a, name), name
    assert b.rope_scaling == a.rope_scaling

    prompt = original.tokenizer.render_chat(MESSAGES, add_generation_prompt=True).ids
    assert loaded.tokenizer.render_chat(MESSAGES, add_generation_prompt=True).ids == prompt
    torch.testing.assert_close(logits(loaded, prompt), logits(original, prompt))
    expected = greedy_reference(original.model, prompt, 16)
    assert greedy_reference(loaded.model, prompt, 16) == expected
    assert len(set(expected)) > 1  # a real continuation, not one repeated token


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_the_gguf_tokenizer_and_chat_template_are_the_originals(
    arch: str, model_dirs: dict[str, Path], gguf_file: Callable[[str, str], Path]
) -> None:
    original = load_pretrained(model_dirs[arch])
    loaded = load_pretrained(gguf_file(arch, "f32"))
    a, b = original.tokenizer, loaded.tokenizer
    for text in TEXTS:
        assert b.encode(text) == a.encode(text), text
        assert b.decode(b.encode(text)) == text
    assert b.chat_template == a.chat_template
    assert sorted(b.special_token_texts()) == sorted(a.special_token_texts())
    assert {k: v for k, v in b.special.items() if v} == {k: v for k, v in a.special.items() if v}
    assert loaded.stop_token_ids == original.stop_token_ids
    for tools in (None, [{"type": "function", "function": {"name": "add", "description": "Sum"}}]):
        want = a.render_chat(MESSAGES, add_generation_prompt=True, tools=tools)
        got = b.render_chat(MESSAGES, add_generation_prompt=True, tools=tools)
        assert (got.text, got.ids, got.assistant_mask) == (want.text, want.ids, want.assistant_mask)
    # The turn marker typed in the user's text stays plain text with the GGUF tokenizer too:
    # only the template's two assistant turns are the control token.
    assert got.ids.count(b.token_id("<|assistant|>")) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(("outtype", "dtype"), [("f16", torch.float16), ("bf16", torch.bfloat16)])
def test_a_16_bit_gguf_holds_the_weights_rounded_to_16_bits(
    outtype: str,
    dtype: torch.dtype,
    model_dirs: dict[str, Path],
    gguf_file: Callable[[str, str], Path],
    one_thread: None,
) -> None:
    path = gguf_file("LlamaForCausalLM", outtype)
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert kinds == {"F32", outtype.upper()}  # the converter keeps 1-D tensors (norms) in F32
    original = load_pretrained(model_dirs["LlamaForCausalLM"])
    loaded = load_pretrained(path)
    assert loaded.model.dtype == torch.float32  # CPU serves fp32 whatever the file holds
    with torch.no_grad():
        for p in original.model.parameters():
            if p.ndim == 2:
                p.copy_(p.to(dtype).float())
    prompt = original.tokenizer.render_chat(MESSAGES, add_generation_prompt=True).ids
    torch.testing.assert_close(logits(loaded, prompt), logits(original, prompt))
    expected = greedy_reference(original.model, prompt, 16)
    assert greedy_reference(loaded.model, prompt, 16) == expected


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_a_q8_0_gguf_stays_quantized_and_computes_its_checkpoints_logits(
    arch: str,
    model_dirs: dict[str, Path],
    gguf_file: Callable[[str, str], Path],
    ggml_kernels: None,
    one_thread: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fireside.model import quantized

    path = gguf_file(arch, "q8_0")
    assert {t.tensor_type.name for t in gguf.GGUFReader(path).tensors} == {"F32", "Q8_0"}
    original = load_pretrained(model_dirs[arch])
    with caplog.at_level("INFO", logger="fireside.model.gguf"):
        loaded = load_pretrained(path)
    assert re.search(r"Q8_0; weights resident [\d.]+ MiB \([\d.]+ MiB in fp32\)", caplog.text)
    assert {m.qtype.name for m in quantized.matrices(loaded.model)} == {"Q8_0"}
    assert all(p.ndim == 1 for p in loaded.model.parameters())  # no matrix expanded to fp32
    quant, dense = quantized.resident_bytes(loaded.model)
    fp32 = sum(4 * p.numel() for p in original.model.parameters())
    assert quant + dense < 0.3 * fp32  # 34 bytes a block of 32 weights, not 128

    prompt = original.tokenizer.render_chat(MESSAGES, add_generation_prompt=True).ids
    got = logits(loaded, prompt)
    decoded = dequantized_logits(path, original.model, prompt)
    assert relative_error(got, decoded) < DEQUANTIZED_TOLERANCE
    assert relative_error(got, logits(original, prompt)) < Q8_0_LOGITS_TOLERANCE


def test_a_tensor_type_fireside_does_not_run_is_named(tmp_path: Path) -> None:
    iq2 = gguf.GGMLQuantizationType.IQ2_XXS  # 256 weights a block of 66 bytes
    path = tmp_path / "iq2.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.zeros((8, 256), np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 66), np.uint8), raw_dtype=iq2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match=r"'blk\.0\.attn_q\.weight' .* is IQ2_XXS") as e:
        load_pretrained(path)
    assert "supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K" in str(
        e.value
    )


def test_a_directory_holding_one_gguf_loads_it(
    gguf_file: Callable[[str, str], Path], tmp_path: Path
) -> None:
    source = gguf_file("Qwen2ForCausalLM", "f32")
    shutil.copy(source, tmp_path / "model.gguf")
    assert find_gguf(tmp_path) == tmp_path / "model.gguf"
    assert load_pretrained(tmp_path).model.config.architecture == "Qwen2ForCausalLM"
    shutil.copy(source, tmp_path / "other.gguf")
    with pytest.raises(CheckpointError, match="holds 2 GGUF files"):
        load_pretrained(tmp_path)


def greedy_reply(bundle: Pretrained, prompt: str, max_tokens: int) -> str:
    ids = bundle.tokenizer.render_chat(
        [{"role": "user", "content": prompt}], add_generation_prompt=True
    ).ids
    out: list[int] = []
    for token in greedy_reference(bundle.model, ids, max_tokens):
        if token in bundle.stop_token_ids:
            break
        out.append(token)
    return bundle.tokenizer.decode(out, skip_special_tokens=True)


def test_fireside_chat_and_serve_take_a_gguf_file(
    model_dirs: dict[str, Path],
    gguf_file: Callable[[str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = gguf_file("LlamaForCausalLM", "f32")
    expected = greedy_reply(load_pretrained(model_dirs["LlamaForCausalLM"]), "hello there", 8)

    capsys.readouterr()
    args = ["chat", "hello there", "--model", str(path), "--temperature", "0", "--max-tokens", "8"]
    assert main([*args, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == f"{expected.rstrip(chr(0xFFFD))}\n"

    with run_server(path, name="tiny-gguf") as server:
        body = {
            "model": "tiny-gguf",
            "messages": [{"role": "user", "content": "hello there"}],
            "temperature": 0,
            "max_tokens": 8,
        }
        r = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == expected


def test_sentencepiece_vocabularies_encode_as_sentencepiece_does(
    converter: Path, tmp_path: Path
) -> None:
    """A Llama-2-style SentencePiece BPE (byte fallback, ▁ spaces) converted by llama.cpp: the
    tokenizer Fireside rebuilds from the GGUF encodes as sentencepiece itself does."""
    import sentencepiece as spm

    lines = [line for text in stdlib_texts(10) for line in text.splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(tmp_path / "tokenizer"),
        model_type="bpe",
        vocab_size=600,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    model_dir = tmp_path / "spm-llama"
    torch.manual_seed(0)
    model = Transformer(tiny_config(sp.vocab_size(), bos_token_id=1, eos_token_id=2))
    model.init_weights(std=0.5)
    save_model(model, model_dir)
    shutil.copy(tmp_path / "tokenizer.model", model_dir / "tokenizer.model")

    bundle = load_pretrained(convert(converter, model_dir, tmp_path / "spm.gguf", "f32"))
    tokenizer = bundle.tokenizer
    assert tokenizer.special["bos_token"] == "<s>" and tokenizer.special["eos_token"] == "</s>"
    texts = [*TEXTS[:3], "Ünïcödé ∑ 漢字 bytes fall back", "x", " x"]
    for text in texts:
        assert tokenizer.encode(text) == sp.encode(text), text
        assert tokenizer.decode(tokenizer.encode(text)) == sp.decode(sp.encode(text))
    # Control tokens are matched whole, with the space put before the text after them.
    assert tokenizer.encode("<s>hi</s>") == [1, *sp.encode("hi"), 2]


def write_gguf(
    path: Path, arch: str, tensors: dict[str, np.ndarray[Any, Any]], split_count: int = 1
) -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_embedding_length(4)
    if split_count > 1:
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, split_count)
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_an_unsupported_architecture_is_named(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "fantasy.gguf", "fantasy", {"token_embd.weight": np.zeros((8, 4), np.float32)}
    )
    with pytest.raises(CheckpointError, match=r"architecture 'fantasy'.*supported: llama"):
        load_pretrained(path)


def test_one_part_of_a_split_gguf_says_to_merge_the_parts(tmp_path: Path) -> None:
    embed = {"token_embd.weight": np.zeros((8, 4), np.float32)}
    path = write_gguf(tmp_path / "m-00001-of-00002.gguf", "llama", embed, split_count=2)
    with pytest.raises(CheckpointError, match=r"one part of a split GGUF model.*--merge"):
        load_pretrained(path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        load_pretrained(path)


# one_thread (function-scoped) only pins torch's thread count: the same for every example.
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_damaged_gguf_is_refused_with_a_clear_error(
    data: st.DataObject, gguf_file: Callable[[str, str], Path], one_thread: None
) -> None:
    # A GGUF file is input from anywhere (a download, a user's upload to the server's models):
    # cut short or with bytes changed in its header, metadata or tensor table, it loads or is a
    # CheckpointError/TokenizerError that names the file, never another exception.
    whole = gguf_file("LlamaForCausalLM", "f32").read_bytes()
    head = min(len(whole), 1 << 16)  # header, metadata and tensor infos; weights come after
    if data.draw(st.booleans(), label="truncate"):
        damaged = whole[: data.draw(st.integers(0, len(whole) - 1), label="cut at")]
    else:
        at = data.draw(st.integers(0, head - 1), label="at")
        new = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        damaged = whole[:at] + new + whole[at + len(new) :]
    fd, name = tempfile.mkstemp(suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(damaged)
        try:
            load_pretrained(name)
        except FiresideError as e:
            assert str(e)
    finally:
        os.unlink(name)


def test_unknown_pre_tokenizers_and_tokenizer_models_are_named() -> None:
    vocab = GGUFVocab(model="gpt2", tokens=["a", "b", "ab"], merges=["a b"], pre="made-up")
    with pytest.raises(TokenizerError, match="pre-tokenizer 'made-up'"):
        build_backend(vocab)
    with pytest.raises(TokenizerError, match="tokenizer model 'wordpiece'"):
        build_backend(GGUFVocab(model="wordpiece", tokens=["a"]))
    vocab.pre = "llama-bpe"
    assert build_backend(vocab).encode("ab").tokens == ["ab"]
