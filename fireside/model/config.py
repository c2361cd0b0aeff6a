"""The model configuration: one dataclass for the Llama family, read from and written to HF config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from fireside.errors import CheckpointError

# HF `architectures` name -> the `model_type` transformers expects beside it.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # HF rope_parameters minus rope_theta, e.g. {"rope_type": "llama3", "factor": 8.0, ...}.
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2: bias on q/k/v projections
    qk_norm: bool = False  # Qwen3: RMSNorm on each head's queries and keys before RoPE
    sliding_window: int | None = None  # Mistral v0.1
    architecture: str = "LlamaForCausalLM"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json keys, kept on save

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise CheckpointError(
                f"unsupported architecture {self.architecture!r}; "
                f"supported: {', '.join(sorted(ARCHITECTURES))}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise CheckpointError(
                f"unsupported rope type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}"
            )

    @property
    def model_type(self) -> str:
        return ARCHITECTURES[self.architecture]

    def num_parameters(self) -> int:
        attn = self.hidden_size * self.head_dim * (self.num_attention_heads * 2)
        attn += self.hidden_size * self.head_dim * self.num_key_value_heads * 2
        mlp = 3 * self.hidden_size * self.intermediate_size
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * (attn + mlp) + embed

    @classmethod
    def from_depth(
        cls, depth: int, vocab_size: int, max_position_embeddings: int = 2048, **overrides: Any
    ) -> ModelConfig:
        """nanochat's one dial: depth sets width (64 per layer), heads (of 64 dims) and MLP size."""
        hidden = 64 * depth
        heads = max(1, hidden // 64)
        kv_heads = heads
        # SwiGLU at 8/3 of the width keeps parameters equal to a 4x GELU MLP; round to 64.
        intermediate = 64 * math.ceil(hidden * 8 / 3 / 64)
        values: dict[str, Any] = dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=hidden // heads,
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            qk_norm=True,
            architecture="Qwen3ForCausalLM",
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> ModelConfig:
        """Read config.json in either the transformers 4 layout (rope_theta, rope_scaling at the
        top) or the transformers 5 layout (rope_parameters)."""
        archs = d.get("architectures") or []
        if not archs:
            raise CheckpointError(
                "config.json has no 'architectures'; supported: " + ", ".join(sorted(ARCHITECTURES))
            )
        arch = archs[0]
        if arch not in ARCHITECTURES:
            raise CheckpointError(
                f"unsupported architecture {arch!r}; supported: {', '.join(sorted(ARCHITECTURES))}"
            )
        try:
            hidden = int(d["hidden_size"])
            heads = int(d["num_attention_heads"])
            rope_params = dict(d.get("rope_parameters") or {})
            legacy_scaling = d.get("rope_scaling")
            if legacy_scaling:
                rope_params.update(legacy_scaling)
            # transformers 4 spelled the type "type" in older checkpoints.
            if "type" in rope_params and "rope_type" not in rope_params:
                rope_params["rope_type"] = rope_params.pop("type")
            rope_params.pop("type", None)
            rope_theta = float(rope_params.pop("rope_theta", d.get("rope_theta", 10000.0)))
            rope_scaling = (
                rope_params if rope_params.get("rope_type", "default") != "default" else None
            )
            sliding_window = d.get("sliding_window")
            if ARCHITECTURES[arch] in ("qwen2", "qwen3"):
                if d.get("use_sliding_window"):
                    raise CheckpointError(
                        "Qwen configs with use_sliding_window=true are not supported"
                    )
                sliding_window = None
            known = {f.name for f in dataclasses.fields(cls)} | {
                "architectures",
                "model_type",
                "rope_parameters",
                "torch_dtype",
                "dtype",
                "use_sliding_window",
                "transformers_version",
            }
            return cls(
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                attention_bias=bool(d.get("attention_bias", ARCHITECTURES[arch] == "qwen2")),
                qk_norm=ARCHITECTURES[arch] == "qwen3",
                sliding_window=int(sliding_window) if sliding_window else None,
                architecture=arch,
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=d.get("eos_token_id"),
                pad_token_id=d.get("pad_token_id"),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except KeyError as e:
            raise CheckpointError(f"config.json is missing required key {e.args[0]!r}") from None

    def to_hf(self, dtype: str = "float32") -> dict[str, Any]:
        """The config.json transformers 4 and 5 both read (v5 converts the v4 rope keys)."""
        d: dict[str, Any] = dict(self.extra)
        d.update(
            architectures=[self.architecture],
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            tie_word_embeddings=self.tie_word_embeddings,
            hidden_act="silu",
            attention_dropout=0.0,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            torch_dtype=dtype,
        )
        if self.model_type in ("llama", "qwen3"):
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = False
        if self.model_type == "mistral":
            d["sliding_window"] = self.sliding_window
        if self.model_type in ("qwen2", "qwen3"):
            d["use_sliding_window"] = False
            d["sliding_window"] = None
        return d
