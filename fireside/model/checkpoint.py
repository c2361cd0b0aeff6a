"""HF-format model directories, both ways: config.json + safetensors (single or sharded).

Loading builds the model on the meta device and assigns each tensor as it is read, so a large
model is never held twice in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fireside.errors import CheckpointError
from fireside.model.config import ModelConfig
from fireside.model.quantized import is_quantized
from fireside.model.transformer import Transformer

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# mkstemp creates 0600 files; a model directory is meant to be read by other users and servers.
SHARED_FILE_MODE = 0o644
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dtype(device: torch.device) -> torch.dtype:
    # This class of CPU has no fast bf16 path, so CPU serves fp32; CUDA serves bf16.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def read_config(model_dir: str | Path) -> ModelConfig:
    path = Path(model_dir)
    if not path.is_dir():
        raise CheckpointError(f"model directory {str(path)!r} does not exist")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{str(config_path)!r} not found: a model directory holds config.json, "
            "model.safetensors and tokenizer.json as Hugging Face writes them"
        )
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(config_path)!r} is not valid JSON: {e}") from None
    return ModelConfig.from_hf(raw)


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{str(index)!r} is not a valid safetensors index: {e}") from None
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
    elif (model_dir / SINGLE_FILE).is_file():
        files = [model_dir / SINGLE_FILE]
    else:
        raise CheckpointError(
            f"no weights in {str(model_dir)!r}: expected {SINGLE_FILE} or {INDEX_FILE} with its shards"
        )
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"weight shard {str(f)!r} named in {INDEX_FILE} is missing")
    return files


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for f in files:
        size, described = os.path.getsize(f), _described_size(f)
        if described > size:
            raise CheckpointError(
                f"{str(f)!r} is truncated: its header describes {described} bytes "
                f"but the file has {size} (an interrupted download or copy?)"
            )
        try:
            with safe_open(str(f), framework="pt") as sf:
                for name in sf.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, sf.get_tensor(name)
        except SafetensorError as e:
            raise CheckpointError(f"{str(f)!r} is not a readable safetensors file: {e}") from None


def _described_size(f: Path) -> int:
    """Bytes the header says the file has (8 + header + data), or 0 if the header is unreadable
    (safetensors then gives its own error)."""
    try:
        with open(f, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len > 100_000_000:
                return 0
            header: dict[str, Any] = json.loads(fh.read(header_len))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError):
        return 0
    return 8 + header_len + max(ends, default=0)


def load_model(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Transformer:
    """Load a Llama/Mistral/Qwen2/Qwen3 checkpoint. dtype defaults to fp32 on CPU, bf16 on CUDA."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    files = weight_files(model_dir)
    model, expected = meta_model(cfg)
    loaded: dict[str, torch.Tensor] = {}
    for name, tensor in iter_tensors(files):
        if name not in expected:
            if cfg.tie_word_embeddings and name == "lm_head.weight":
                continue  # some exporters write the tied head anyway
            if "rotary_emb" in name:
                continue  # old exports saved RoPE buffers
            raise CheckpointError(f"unexpected tensor {name!r} in {str(model_dir)!r}")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
        loaded[name] = tensor.to(device=device, dtype=dtype)
    return assign_weights(model, expected, loaded, model_dir, device)


def meta_model(cfg: ModelConfig) -> tuple[Transformer, dict[str, torch.Tensor]]:
    """The model on the meta device (no memory) and the tensors a checkpoint must supply
    (a tied head comes with the embeddings)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = dict(model.state_dict())
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    return model, expected


def assign_weights(
    model: Transformer,
    expected: dict[str, torch.Tensor],
    loaded: dict[str, torch.Tensor],
    source: Path,
    device: torch.device,
) -> Transformer:
    """The loaded tensors put in place of the meta ones (no copy); every expected one must be
    there. Ties the head and makes the RoPE buffer on `device`."""
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise CheckpointError(
            f"{str(source)!r} lacks {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}"
        )
    model.load_state_dict(loaded, assign=True, strict=False)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset(device)
    return model.eval()


def save_model(model: Transformer, model_dir: str | Path, max_shard_bytes: int = 4 * 2**30) -> None:
    """Write config.json and safetensors (sharded past max_shard_bytes) as transformers does.

    Each file is written to a temporary name and renamed, so a crash never leaves a half file.
    """
    if is_quantized(model):
        # Its projections are ggml blocks with no fp32 weights left to write.
        raise CheckpointError(
            "this model's weights are quantized (--quantize): safetensors would need them in "
            "fp32; save the unquantized model, or write a quantized one with `fireside quantize`"
        )
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    dtype_name = {v: k for k, v in DTYPES.items()}.get(model.dtype, "float32")

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t.cpu()
        size += nbytes

    for stale in [*model_dir.glob("model*.safetensors"), model_dir / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        _atomic_save(shards[0], model_dir / SINGLE_FILE)
    else:
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            _atomic_save(shard, model_dir / name)
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        write_json(
            model_dir / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map}
        )
    write_json(model_dir / "config.json", model.config.to_hf(dtype_name))


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, SHARED_FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    os.chmod(tmp, SHARED_FILE_MODE)
    os.replace(tmp, path)
