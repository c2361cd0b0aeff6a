"""How an engine is sized: KV memory, batch limits, queue limits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineConfig:
    block_size: int = 16  # tokens per KV block
    # KV pool size: num_kv_blocks if given, else the blocks that fit kv_cache_bytes, capped at
    # what max_num_seqs sequences of full context could ever use.
    kv_cache_bytes: int = 1 << 30
    num_kv_blocks: int | None = None
    max_num_seqs: int = 64  # samples decoding at once
    # Tokens per step beyond the decodes: bounds how long a prompt chunk delays the decodes.
    max_num_batched_tokens: int = 512
    max_waiting: int = 1024  # queued requests beyond this are refused (EngineOverloadedError)
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    prefix_caching: bool = True
    seed: int | None = None  # for requests without a seed; None = nondeterministic
    # CPU fp32: multi-row matmuls (batched decode, prefill) run on oneDNN-packed copies of the
    # projection weights laid out for batches of this many rows: batched decode ~1.3x faster
    # (bench/matmul.py), for a second copy of those weights. Skipped where max_num_seqs is 1
    # (one-row decode steps run on the dense weights) or where the copy would take over a
    # quarter of the machine's memory. None never packs. Ignored on CUDA.
    pack_weights_for_batch: int | None = 16

    def __post_init__(self) -> None:
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens", "max_waiting"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be at least 1")
        if self.pack_weights_for_batch is not None and self.pack_weights_for_batch < 1:
            raise ValueError("EngineConfig.pack_weights_for_batch must be at least 1 or None")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError("EngineConfig.num_kv_blocks must be at least 1")
