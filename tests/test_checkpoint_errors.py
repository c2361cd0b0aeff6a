"""Bad model directories fail with errors that name the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fireside.errors import CheckpointError, TokenizerError
from fireside.model import load_model, load_pretrained


@pytest.fixture()
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "model"
    shutil.copytree(tiny_model_dir, path)
    return path


def edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json.* not found"):
        load_model(tmp_path)


def test_unsupported_architecture_lists_supported(model_dir: Path) -> None:
    edit_config(model_dir, architectures=["GPT2LMHeadModel"])
    with pytest.raises(CheckpointError) as e:
        load_model(model_dir)
    msg = str(e.value)
    assert "GPT2LMHeadModel" in msg
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        assert arch in msg


def test_unsupported_rope_type(model_dir: Path) -> None:
    edit_config(model_dir, rope_scaling={"rope_type": "longrope", "factor": 2.0})
    with pytest.raises(CheckpointError, match="longrope"):
        load_model(model_dir)


def test_missing_weights(model_dir: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights .*model\.safetensors"):
        load_model(model_dir)


def test_truncated_weights(model_dir: Path) -> None:
    f = model_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        load_model(model_dir)


def test_garbage_weights(model_dir: Path) -> None:
    (model_dir / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(model_dir)


def test_missing_shard(model_dir: Path) -> None:
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors.*missing"):
        load_model(model_dir)


def test_config_that_disagrees_with_weights(model_dir: Path) -> None:
    edit_config(model_dir, intermediate_size=96)
    with pytest.raises(CheckpointError, match=r"shape .* config\.json implies"):
        load_model(model_dir)
    edit_config(model_dir, intermediate_size=128, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match="lacks"):
        load_model(model_dir)


def test_config_missing_a_key(model_dir: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    del cfg["hidden_size"]
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="hidden_size"):
        load_model(model_dir)


def test_tokenizer_larger_than_embedding(model_dir: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    # Shrink the model's vocabulary below the tokenizer's by cutting the embedding rows.
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        weights[name] = weights[name][:300].contiguous()
    save_file(weights, model_dir / "model.safetensors")
    edit_config(model_dir, vocab_size=300)
    with pytest.raises(TokenizerError, match="do not belong together"):
        load_pretrained(model_dir)
    assert cfg["vocab_size"] > 300


def test_missing_tokenizer(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        load_pretrained(model_dir)
