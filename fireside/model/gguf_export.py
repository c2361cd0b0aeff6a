"""A Fireside model written as one GGUF file that llama.cpp (and Fireside) load:
`fireside export --gguf` and `fireside quantize`.

The file is what llama.cpp's convert_hf_to_gguf.py would write for the same model: its tensor
names, the architecture's hyperparameters, Llama 3's RoPE scaling as a `rope_freqs` tensor, the
q and k rows of `llama` models reordered for its interleaved RoPE, and the tokenizer as a
byte-level BPE with the name of the llama.cpp pre-tokenizer that splits text the same way.
Quantized tensors are ggml's own blocks (fireside.kernels.ggml.quantize_blocks); the tensors
stream to disk one at a time, so the file is never held in memory whole.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGUFWriter, LlamaFileType, TokenType
from gguf import GGMLQuantizationType as QType
from torch import Tensor

from fireside.errors import CheckpointError
from fireside.model.checkpoint import SHARED_FILE_MODE
from fireside.model.gguf import GGUF_ARCHITECTURES, PERMUTED, ROPE_FREQS, gguf_name, interleave
from fireside.model.gguf_tokenizer import GGUFVocab, vocab_for_gguf
from fireside.model.pretrained import Pretrained
from fireside.model.transformer import rope_inv_freq

# --dtype of `fireside export --gguf`: every matrix at one type; `fireside quantize`'s int8 and
# int4 pick per tensor as quantize_model does (fireside.model.quantized).
EXPORT_DTYPES = ("f32", "f16", "q8_0", "q4_0", "q4_k")
QUANTIZE_DTYPES = ("int8", "int4")
_ONE_TYPE = {"f32": QType.F32, "f16": QType.F16, "q8_0": QType.Q8_0, "q4_0": QType.Q4_0}
# general.file_type (what llama.cpp prints as the model's "ftype") by the matrices' main type.
_FILE_TYPES = {
    QType.F32: LlamaFileType.ALL_F32,
    QType.F16: LlamaFileType.MOSTLY_F16,
    QType.BF16: LlamaFileType.MOSTLY_BF16,
    QType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    QType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    QType.Q4_K: LlamaFileType.MOSTLY_Q4_K_S,
    QType.Q5_K: LlamaFileType.MOSTLY_Q5_K_S,
    QType.Q6_K: LlamaFileType.MOSTLY_Q6_K,
}


@dataclass(frozen=True)
class Planned:
    """One tensor of the file: its GGUF name, type and the weights (HF layout, fp32 or not)."""

    name: str
    qtype: QType
    weight: Tensor

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """The shape of the tensor's bytes as a uint8 array (rows of blocks)."""
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        *rows, columns = self.weight.shape
        return (*rows, columns // block * type_size)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape))


def write_gguf(
    bundle: Pretrained,
    path: str | Path,
    dtype: str = "f32",
    tensor_types: Mapping[str, QType] | None = None,
) -> dict[QType, int]:
    """Write `bundle` to `path` as GGUF with its matrices at `dtype` (EXPORT_DTYPES or
    QUANTIZE_DTYPES), or at the type `tensor_types` gives an HF name (as llama-quantize's
    --tensor-type does); returns how many tensors went in at each type."""
    if dtype not in (*EXPORT_DTYPES, *QUANTIZE_DTYPES):
        raise CheckpointError(
            f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)} "
            f"(or {', '.join(QUANTIZE_DTYPES)} with fireside quantize)"
        )
    cfg = bundle.model.config
    arch = GGUF_ARCHITECTURES.get(cfg.architecture)
    if arch is None:
        raise CheckpointError(f"GGUF export does not write {cfg.architecture} models")
    if cfg.sliding_window is not None and cfg.sliding_window < cfg.max_position_embeddings:
        raise CheckpointError(
            f"the model attends over a sliding window of {cfg.sliding_window} tokens, which "
            "llama.cpp's `llama` architecture does not: it cannot be exported as GGUF"
        )
    # The tokenizer first: one llama.cpp cannot reproduce fails before any weight is written.
    vocab = vocab_for_gguf(bundle.tokenizer, cfg.vocab_size)
    plan = list(_plan(bundle, arch, dtype, tensor_types or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    writer = GGUFWriter(tmp, arch)
    try:
        _add_hyperparameters(writer, bundle, plan)
        _add_tokenizer(writer, bundle, vocab)
        for t in plan:
            writer.add_tensor_info(t.name, t.byte_shape, np.dtype(np.uint8), t.nbytes, t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan:
            writer.write_tensor_data(_encode(t))
        writer.close()
        os.chmod(tmp, SHARED_FILE_MODE)
        os.replace(tmp, path)
    finally:
        writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dict(Counter(t.qtype for t in plan))


def tensor_type(name: str, weight: Tensor, dtype: str) -> QType:
    """The GGUF type of one tensor (HF name) at `dtype`. Vectors (norms, biases, rope_freqs)
    stay F32 as llama.cpp keeps them; a matrix whose rows do not split into the type's blocks
    stays F32 too."""
    if weight.ndim < 2 or dtype == "f32":
        return QType.F32
    in_features = weight.shape[-1]
    if dtype in QUANTIZE_DTYPES:
        # The types `fireside serve --quantize` gives the same tensor.
        from fireside.model.quantized import _type_for

        wanted = QType(_type_for("int8" if dtype == "int8" else "int4", name, in_features))
    elif dtype == "q4_k":
        wanted = QType.Q4_K if in_features % 256 == 0 else QType.Q4_0
    else:
        wanted = _ONE_TYPE[dtype]
    if in_features % GGML_QUANT_SIZES[wanted][0]:
        return QType.F32  # as quantize_model keeps a matrix it cannot block
    return wanted


def _plan(
    bundle: Pretrained, arch: str, dtype: str, tensor_types: Mapping[str, QType]
) -> Iterator[Planned]:
    """Every tensor of the file in llama.cpp's order: embeddings, the blocks, norm, head."""
    cfg = bundle.model.config
    state = _float_state(bundle)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # llama.cpp ties a head that is absent
    order = sorted(state, key=_llama_cpp_order)
    if (cfg.rope_scaling or {}).get("rope_type") == "llama3":
        # convert_hf_to_gguf.py's rope_factors: the divisor of each default frequency.
        default = 1.0 / (
            cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        )
        yield Planned(ROPE_FREQS, QType.F32, default / rope_inv_freq(cfg))
    for hf in order:
        weight = state[hf]
        if arch in PERMUTED and ".self_attn.q_proj." in hf:
            weight = interleave(weight, cfg.num_attention_heads)
        elif arch in PERMUTED and ".self_attn.k_proj." in hf:
            weight = interleave(weight, cfg.num_key_value_heads)
        name = gguf_name(hf)
        if name is None:
            raise CheckpointError(f"the model's tensor {hf!r} has no GGUF name")
        qtype = tensor_types.get(hf) or tensor_type(hf, weight, dtype)
        yield Planned(name, QType(qtype), weight)


def _float_state(bundle: Pretrained) -> dict[str, Tensor]:
    """The model's weights by HF name, in floating point."""
    from fireside.model import quantized

    if quantized.is_quantized(bundle.model):
        where = f"{str(bundle.path)!r}" if bundle.path else "the model"
        raise CheckpointError(
            f"{where} holds quantized weights; export and quantize start from a float model "
            "(an HF model directory or an F32/F16/BF16 GGUF), so that nothing is rounded twice"
        )
    return dict(bundle.model.state_dict())


def _llama_cpp_order(hf: str) -> tuple[int, int, str]:
    if hf == "model.embed_tokens.weight":
        return (0, 0, hf)
    if hf.startswith("model.layers."):
        return (1, int(hf.split(".")[2]), hf)
    return (2, 0 if hf == "model.norm.weight" else 1, hf)


def _encode(t: Planned) -> np.ndarray[Any, Any]:
    weight = t.weight.detach().to("cpu")
    if t.qtype == QType.F32:
        return weight.float().contiguous().numpy()
    if t.qtype == QType.F16:
        return weight.to(torch.float16).contiguous().numpy()
    from fireside.kernels.ggml import quantize_blocks

    blocks = quantize_blocks(weight.float().contiguous(), t.qtype)
    return np.ascontiguousarray(blocks).view(np.uint8)


def _file_type(plan: list[Planned]) -> LlamaFileType:
    """The file's ftype: its matrices' most common type, Q4_K/Q5_K with Q6_K beside them
    being llama.cpp's _M mixes."""
    kinds = Counter(t.qtype for t in plan if t.weight.ndim == 2)
    if not kinds:
        return LlamaFileType.ALL_F32
    main = kinds.most_common(1)[0][0]
    if QType.Q6_K in kinds and main in (QType.Q4_K, QType.Q5_K):
        return LlamaFileType.MOSTLY_Q4_K_M if main == QType.Q4_K else LlamaFileType.MOSTLY_Q5_K_M
    return _FILE_TYPES.get(main, LlamaFileType.ALL_F32)


def _add_hyperparameters(writer: GGUFWriter, bundle: Pretrained, plan: list[Planned]) -> None:
    cfg = bundle.model.config
    if bundle.path is not None:
        writer.add_name(bundle.path.stem if bundle.path.is_file() else bundle.path.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    scaling = cfg.rope_scaling or {}
    if scaling.get("rope_type") == "linear":
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif scaling.get("rope_type") == "llama3":
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
    writer.add_file_type(_file_type(plan))
    if any(t.qtype not in (QType.F32, QType.F16, QType.BF16) for t in plan):
        writer.add_quantization_version(GGML_QUANT_VERSION)


def _add_tokenizer(writer: GGUFWriter, bundle: Pretrained, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    assert vocab.pre is not None
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types([TokenType(t) for t in vocab.token_types])
    writer.add_token_merges(vocab.merges)
    ids = vocab.special_ids
    if "bos_token" in ids:
        writer.add_bos_token_id(ids["bos_token"])
    if "pad_token" in ids:
        writer.add_pad_token_id(ids["pad_token"])
    if "unk_token" in ids:
        writer.add_unk_token_id(ids["unk_token"])
    stops = bundle.stop_token_ids
    if stops:
        writer.add_eos_token_id(stops[0])
    if len(stops) > 1:  # a second stop (Llama 3's <|eot_id|> beside <|end_of_text|>)
        writer.add_eot_token_id(stops[1])
    # Fireside encodes prompts without adding BOS (a chat template writes it where it belongs);
    # llama.cpp must not add one either.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if bundle.tokenizer.chat_template:
        writer.add_chat_template(bundle.tokenizer.chat_template)
