"""GGUF files (llama.cpp, Ollama) loaded as a Pretrained bundle.

The metadata gives the ModelConfig, the tokenizer (rebuilt by gguf_tokenizer.py) and the chat
template; the tensors are renamed to HF names, so the one Transformer serves them. llama.cpp's
converter reorders the q and k rows of `llama` models for its interleaved RoPE; they are put
back here (on quantized rows too: a row is whole blocks, so reordering rows moves byte ranges).

A file of F32/F16/BF16 tensors loads as a float model. In a file with quantized tensors (Q8_0,
Q4_0, Q4_K, Q5_K, Q6_K, mixed as llama.cpp's Q4_K_M files mix them) the projections, the
embeddings and the head stay in their GGUF type: the memory-mapped blocks go straight to ggml's
kernels (fireside.kernels.ggml, through fireside.model.quantized), never expanded to fp32;
norms and biases are float. Other types are refused with the tensor and type named.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from fireside.errors import CheckpointError
from fireside.kernels.ggml import SUPPORTED as SUPPORTED_QTYPES
from fireside.model.checkpoint import assign_weights, default_dtype, meta_model
from fireside.model.config import ModelConfig
from fireside.model.gguf_tokenizer import GGUFVocab, build_backend
from fireside.model.pretrained import Pretrained, check_tokenizer_matches
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer, rope_inv_freq

if TYPE_CHECKING:
    from gguf import GGUFReader, ReaderTensor

    from fireside.kernels.ggml import QuantMatrix

log = logging.getLogger(__name__)

# general.architecture -> HF architecture. Mistral's (v0.1-v0.3, Nemo) GGUFs say "llama".
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
# HF architecture -> the general.architecture an export writes (Mistral's converter says llama).
GGUF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
# The architectures whose q/k rows llama.cpp's converter permutes (LlamaModel.permute).
PERMUTED = {"llama"}
FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# The quantized types Fireside's kernels run (fireside.kernels.ggml.SUPPORTED, one list for both).
QUANT_TYPES = tuple(t.name for t in sorted(SUPPORTED_QTYPES) if t.name not in FLOAT_TYPES)
SUPPORTED_TYPES = ", ".join((*FLOAT_TYPES, *QUANT_TYPES))
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
ROPE_FREQS = "rope_freqs.weight"  # Llama 3.1's rope scaling, as per-frequency divisors


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one .gguf in a directory that is not
    an HF model directory. None when `path` is not a GGUF model."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CheckpointError(
            f"{str(path)!r} holds {len(found)} GGUF files ({names}): pass --model with the one to load"
        )
    return found[0] if found else None


def load_gguf(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Pretrained:
    """Weights, tokenizer and generation defaults from one GGUF file."""
    path = Path(path)
    reader = _open(path)
    try:  # the reader decodes strings lazily: a damaged one fails here, not in _open
        meta = _metadata(reader)
    except (ValueError, IndexError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable GGUF file: {e}") from None
    arch = str(meta.get("general.architecture", ""))
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{str(path)!r} is a GGUF model of architecture {arch!r}, which Fireside does not "
            f"run; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    if int(meta.get("split.count", 1)) > 1:
        raise CheckpointError(
            f"{str(path)!r} is one part of a split GGUF model; merge the parts into one file "
            "first (llama.cpp's `llama-gguf-split --merge FIRST_PART OUT.gguf`)"
        )
    tensors = {t.name: t for t in reader.tensors}
    quantized = _check_types(tensors, path)
    cfg = gguf_config(meta, tensors, path)
    # The tokenizer first: a vocabulary Fireside cannot rebuild fails before the weights load.
    vocab = GGUFVocab.from_metadata(meta)
    template = meta.get("tokenizer.chat_template")
    tokenizer = Tokenizer(build_backend(vocab), str(template) if template else None, vocab.special)
    check_tokenizer_matches(tokenizer, cfg.vocab_size, str(path))
    device = torch.device(device)
    if quantized:
        _check_quantized_target(quantized, device, dtype, path)
        model = _load_weights(cfg, arch, tensors, device, torch.float32, path, quantize=True)
    else:
        model = _load_weights(cfg, arch, tensors, device, dtype or default_dtype(device), path)
    return Pretrained(
        model=model, tokenizer=tokenizer, generation_config=_generation_config(vocab), path=path
    )


def _open(path: Path) -> GGUFReader:
    from gguf import GGUFReader

    if not path.is_file():
        raise CheckpointError(f"GGUF file {str(path)!r} does not exist")
    try:
        return GGUFReader(path)
    except (ValueError, OSError, IndexError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable GGUF file: {e}") from None


def _metadata(reader: GGUFReader) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items()}


def _check_types(tensors: dict[str, ReaderTensor], path: Path) -> list[str]:
    """Every tensor's type is one Fireside runs; returns the quantized types present."""
    found = []
    for name, t in tensors.items():
        kind = t.tensor_type.name
        if kind in QUANT_TYPES and len(t.shape) == 2:
            found.append(kind)
        elif kind not in FLOAT_TYPES:
            raise CheckpointError(
                f"tensor {name!r} in {str(path)!r} is {kind}, a type Fireside does not run; "
                f"supported: {SUPPORTED_TYPES} (llama.cpp's llama-quantize writes those, e.g. "
                "Q4_K_M or Q8_0, from an F16 or F32 file)"
            )
    return sorted(set(found), key=QUANT_TYPES.index)


def _check_quantized_target(
    types: list[str], device: torch.device, dtype: torch.dtype | None, path: Path
) -> None:
    from fireside.kernels import ggml

    what = f"{str(path)!r} holds {'/'.join(types)} tensors"
    if device.type != "cpu":
        raise CheckpointError(
            f"{what}, which Fireside runs on CPU only (ggml's kernels); serve it with "
            "--device cpu, or use an F16/BF16 GGUF or HF model on CUDA"
        )
    if dtype not in (None, torch.float32):
        raise CheckpointError(f"{what}, whose kernels take fp32 activations, not {dtype}")
    reason = ggml.unavailable_reason()
    if reason is not None:
        raise CheckpointError(f"{what}, which run on ggml's kernels: {reason}")


def gguf_config(meta: dict[str, Any], tensors: dict[str, ReaderTensor], path: Path) -> ModelConfig:
    arch = str(meta["general.architecture"])

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise CheckpointError(f"{str(path)!r} lacks the metadata key {arch}.{key!r}")
        return value

    embed = tensors.get("token_embd.weight")
    if embed is None:
        raise CheckpointError(f"{str(path)!r} has no token_embd.weight tensor")
    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    kv_heads = int(get("attention.head_count_kv", heads))
    head_dim = int(get("attention.key_length", hidden // heads))
    rotated = int(get("rope.dimension_count", head_dim))
    if rotated != head_dim or int(get("attention.value_length", head_dim)) != head_dim:
        raise CheckpointError(
            f"{str(path)!r} rotates {rotated} of {head_dim} dimensions per head or has values "
            "of another width than keys; Fireside runs RoPE over whole heads of one width"
        )
    cfg = ModelConfig(
        vocab_size=int(embed.data.shape[0]),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_hidden_layers=int(get("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=int(get("context_length", 4096)),
        # stored as float32: 1e-6 reads back as 9.99999997e-07
        rms_norm_eps=float(f"{float(get('attention.layer_norm_rms_epsilon', 1e-5)):.6g}"),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=_linear_scaling(meta, arch, path),
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias="blk.0.attn_q.bias" in tensors,
        qk_norm="blk.0.attn_q_norm.weight" in tensors,
        architecture=ARCHITECTURES[arch],
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )
    if ROPE_FREQS in tensors:
        factors = _tensor(tensors[ROPE_FREQS]).double()
        original = meta.get(f"{arch}.rope.scaling.original_context_length")
        cfg.rope_scaling = llama3_scaling(cfg, factors, original, path)
    return cfg


def _linear_scaling(meta: dict[str, Any], arch: str, path: Path) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    factor = float(meta.get(f"{arch}.rope.scaling.factor") or 1.0)
    if kind == "none" or (kind == "linear" and factor == 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    raise CheckpointError(
        f"{str(path)!r} asks for {kind!r} RoPE scaling; Fireside runs none, linear and Llama 3's"
    )


def llama3_scaling(
    cfg: ModelConfig, factors: Tensor, original_context: int | None, path: Path
) -> dict[str, Any] | None:
    """Llama 3's rope_scaling recovered from the divisors llama.cpp's converter wrote.

    Within the blended band, 1/divisor = (1 - s)/factor + s with s linear in 1/wavelength, so
    two points of the band fix the line; any (original context, low, high) on it gives the same
    frequencies. Without the original context in the file, the one that makes low_freq_factor
    1 (as in every Llama 3 release) is taken. The result is checked against the divisors."""
    factor = float(factors.max())
    if factor == 1.0:
        return None
    exponent = torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta**exponent)
    band = (factors > 1.0 + 1e-6) & (factors < factor - 1e-6)
    if int(band.sum()) < 2 or len(factors) != len(inv_freq):
        raise CheckpointError(
            f"{str(path)!r} has rope_freqs that are not Llama 3's rope scaling; Fireside runs "
            "none, linear and Llama 3's"
        )
    smooth = (1 / factors[band] - 1 / factor) / (1 - 1 / factor)
    x = inv_freq[band] / (2 * math.pi)  # 1 / wavelength
    slope, intercept = (float(v) for v in np.polyfit(x.numpy(), smooth.numpy(), 1))
    if original_context is None:
        original_context = round(-slope / intercept) if intercept < 0 else 8192
    width = original_context / slope  # high_freq_factor - low_freq_factor
    low = -intercept * width
    scaling = {  # rounded off the fit's float noise: 0.99999993 is Llama's 1.0
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": float(f"{low:.6g}"),
        "high_freq_factor": float(f"{low + width:.6g}"),
        "original_max_position_embeddings": original_context,
    }
    cfg.rope_scaling = scaling
    expected = (1.0 / (cfg.rope_theta**exponent)).float() / factors.float()
    if not torch.allclose(rope_inv_freq(cfg), expected, rtol=1e-4, atol=0):
        raise CheckpointError(
            f"{str(path)!r} has rope_freqs that Llama 3's rope scaling does not reproduce"
        )
    return scaling


_GGUF_LAYER_NAMES = {hf: name for name, hf in _LAYER_NAMES.items()}
_HF_LAYER_TENSOR = re.compile(r"model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)")


def gguf_name(hf: str) -> str | None:
    """The llama.cpp name of an HF tensor name (hf_name's inverse)."""
    for name, target in _GLOBAL_NAMES.items():
        if target == hf:
            return name
    m = _HF_LAYER_TENSOR.fullmatch(hf)
    if m is None or m.group(2) not in _GGUF_LAYER_NAMES:
        return None
    return f"blk.{m.group(1)}.{_GGUF_LAYER_NAMES[m.group(2)]}.{m.group(3)}"


def hf_name(name: str) -> str | None:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    m = _LAYER_TENSOR.fullmatch(name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        return None
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"


def _tensor(t: ReaderTensor) -> Tensor:
    """The tensor in PyTorch's dimension order (GGUF lists dimensions innermost first; the
    reader's array already has them reversed)."""
    data = t.data
    if t.tensor_type.name == "BF16":  # the reader hands BF16 out as raw bytes
        data = data.view(np.int16)
        return torch.from_numpy(np.array(data)).view(torch.bfloat16)
    return torch.from_numpy(np.array(data))


Rows = TypeVar("Rows", Tensor, np.ndarray[Any, Any])


def unpermute(w: Rows, heads: int) -> Rows:
    """Undo convert_hf_to_gguf.py's LlamaModel.permute: GGUF's `llama` rotates pairs
    (2j, 2j + 1) of a head, HF's Llama (and Fireside) dimension j with j + d/2. Rows of
    quantized blocks (a uint8 array, one row per output) reorder the same way."""
    return (
        w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def interleave(w: Tensor, heads: int) -> Tensor:
    """convert_hf_to_gguf.py's LlamaModel.permute (unpermute's inverse), for export."""
    pairs = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
    return pairs.swapaxes(1, 2).reshape(w.shape)


def _load_weights(
    cfg: ModelConfig,
    arch: str,
    tensors: dict[str, ReaderTensor],
    device: torch.device,
    dtype: torch.dtype,
    path: Path,
    quantize: bool = False,
) -> Transformer:
    """The model; with `quantize`, its projections, embeddings and head (those not F32 in the
    file) as ggml matrices of the file's blocks."""
    model, expected = meta_model(cfg)
    loaded: dict[str, Tensor] = {}
    matrices: dict[str, QuantMatrix] = {}
    for name, t in tensors.items():
        if name == ROPE_FREQS:
            continue  # read into the config
        target = hf_name(name)
        if target is None or target not in expected:
            raise CheckpointError(f"unexpected tensor {name!r} in {str(path)!r}")
        shape = tuple(int(n) for n in reversed(t.shape))
        if shape != tuple(expected[target].shape):
            raise CheckpointError(
                f"tensor {name!r} in {str(path)!r} has shape {shape}, its metadata "
                f"implies {tuple(expected[target].shape)}"
            )
        heads = None
        if arch in PERMUTED and target.endswith(("q_proj.weight", "q_proj.bias")):
            heads = cfg.num_attention_heads
        elif arch in PERMUTED and target.endswith(("k_proj.weight", "k_proj.bias")):
            heads = cfg.num_key_value_heads
        if quantize and t.tensor_type.name != "F32" and _held_quantized(target):
            matrices[target] = _matrix(t, target, shape, heads)
            continue
        tensor = _tensor(t)
        if heads is not None:
            tensor = unpermute(tensor, heads)
        loaded[target] = tensor.to(device=device, dtype=dtype)
    expected = {k: v for k, v in expected.items() if k not in matrices}
    model = assign_weights(model, expected, loaded, path, device)
    if matrices:
        from fireside.model import quantized

        quantized.attach(model, matrices)
        _log_resident(model, matrices, path)
    return model


def _held_quantized(target: str) -> bool:
    """The weights fireside.model.quantized holds as ggml matrices."""
    return target.endswith("proj.weight") or target in (EMBED, HEAD)


def _matrix(t: ReaderTensor, target: str, shape: tuple[int, ...], heads: int | None) -> QuantMatrix:
    """A ggml matrix straight from the file's (memory-mapped) blocks, rows reordered first
    where llama.cpp's converter permuted them."""
    from fireside.kernels.ggml import QuantMatrix

    out_features, in_features = shape
    raw = np.asarray(t.data).view(np.uint8).reshape(out_features, -1)
    if heads is not None:
        raw = np.ascontiguousarray(unpermute(raw, heads))
    return QuantMatrix.from_blocks(
        raw, int(t.tensor_type), out_features, in_features, lookup=target == EMBED
    )


def _log_resident(model: Transformer, matrices: dict[str, QuantMatrix], path: Path) -> None:
    from fireside.model import quantized

    quant, dense = quantized.resident_bytes(model)
    fp32 = 4 * sum(m.out_features * m.in_features for m in matrices.values())
    fp32 += dense
    kinds = Counter(m.qtype.name for m in matrices.values())
    log.info(
        "%s: %s; weights resident %.1f MiB (%.1f MiB in fp32)",
        path.name,
        ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
        (quant + dense) / 2**20,
        fp32 / 2**20,
    )


def _generation_config(vocab: GGUFVocab) -> dict[str, Any]:
    """generation_config's bos and eos ids: end of turn and end of text both stop."""
    ids = vocab.special_ids
    eos = [ids[n] for n in ("eos_token", "eot_token", "eom_token") if n in ids]
    eos = list(dict.fromkeys(eos))
    gen: dict[str, Any] = {}
    if "bos_token" in ids:
        gen["bos_token_id"] = ids["bos_token"]
    if eos:
        gen["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return gen
