"""LoRA adapters served beside the base model, many in one batch (vLLM's multi-LoRA).

An adapter is a directory in PEFT's format (`adapter_config.json`, `adapter_model.safetensors`),
as `fireside train sft|dpo --lora-rank` writes it and as transformers, PEFT and vLLM read it.
Its matrices are never merged into the base: each request names its adapter (or none), and a
step that mixes requests of several adapters runs the base weights once for every row, then
adds each adapter's low-rank product to its own rows only:

    y = x W^T + scale * (x A^T) B^T      for the rows of that adapter

The engine runs the base in its serving layout, where q, k and v are one matrix (and gate and
up another). An adapter's A matrices for the projections of one fused group are stacked, and
its B matrices laid out block-diagonally, so one pair of small matmuls adds every projection's
update to the fused output at once; `scale` is folded into B at load.

Which rows belong to which adapter is set per forward by the engine (`lora_batch`), on the
engine's own thread; modules call `add_lora` after each fused projection, a no-op when no row
has an adapter (training, the reference decoder, a batch of base requests).
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from fireside.errors import CheckpointError
from fireside.model.config import ModelConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# The serving layout's fused groups, and the projections each holds, in their row order.
GROUPS: dict[str, tuple[str, ...]] = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
           "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}  # fmt: skip
# PEFT's key: base_model.model.<module path>.lora_A.weight (the adapter's own name dropped).
_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$"
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AdapterError(CheckpointError):
    """An adapter directory that cannot be served on this base model."""


@dataclass(frozen=True)
class LoraWeights:
    """One fused group's update: A [rank, in] and B [out, rank], B already scaled."""

    a: Tensor
    b: Tensor


@dataclass
class Adapter:
    name: str
    path: Path
    rank: int
    alpha: float
    targets: tuple[str, ...]
    layers: list[dict[str, LoraWeights]]  # per layer: fused group -> its update
    # Unique per load: the prefix cache is salted with it, so blocks computed under one
    # adapter (or an earlier load of the same name) are never reused under another.
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def num_parameters(self) -> int:
        return sum(w.a.numel() + w.b.numel() for layer in self.layers for w in layer.values())


def _group_sizes(cfg: ModelConfig) -> dict[str, int]:
    """Output rows of each projection in the serving layout."""
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return {"q_proj": q, "k_proj": kv, "v_proj": kv, "o_proj": cfg.hidden_size,
            "gate_proj": cfg.intermediate_size, "up_proj": cfg.intermediate_size,
            "down_proj": cfg.hidden_size}  # fmt: skip


def _in_sizes(cfg: ModelConfig) -> dict[str, int]:
    sizes = dict.fromkeys(("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"), cfg.hidden_size)
    sizes["o_proj"] = cfg.num_attention_heads * cfg.head_dim
    sizes["down_proj"] = cfg.intermediate_size
    return sizes


def _read_config(path: Path) -> dict[str, object]:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterError(f"{path} is not a LoRA adapter: it has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{config_path} cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{config_path} is not a JSON object")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    return config


def load_adapter(
    name: str, path: Path, cfg: ModelConfig, device: torch.device, dtype: torch.dtype
) -> Adapter:
    """Reads a PEFT LoRA directory for a base of config `cfg`; every shape is checked, and an
    adapter of another base, or one that targets what the server cannot serve (embeddings,
    the LM head, biases, DoRA), is refused with the reason."""
    if not NAME.match(name):
        raise AdapterError(
            f"adapter name {name!r}: use letters, digits, '.', '_' or '-' (64 at most)"
        )
    path = Path(path)
    config = _read_config(path)
    rank = config.get("r")
    alpha = config.get("lora_alpha", rank)
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, int | float):
        raise AdapterError(
            f"{path / CONFIG_FILE}: r must be a positive integer, lora_alpha a number"
        )
    for flag, meaning in (("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out")):
        if config.get(flag):
            raise AdapterError(f"{path / CONFIG_FILE}: {meaning} adapters are not served")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{path / CONFIG_FILE}: adapters that train biases are not served")
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise AdapterError(f"{path} has no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights_path))
    except Exception as e:  # safetensors raises its own error types for a broken file
        raise AdapterError(f"{weights_path} cannot be read: {e}") from None

    found: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, tensor in tensors.items():
        m = _KEY.match(key)
        if m is None or _PARENT.get(m[3]) != m[2]:
            raise AdapterError(
                f"{weights_path}: {key!r} is not a LoRA matrix of a layer's q/k/v/o/gate/up/down "
                "projection; only those are served"
            )
        found.setdefault((int(m[1]), m[3]), {})[m[4]] = tensor
    if not found:
        raise AdapterError(f"{weights_path} holds no LoRA matrices")

    outs, ins = _group_sizes(cfg), _in_sizes(cfg)
    for (layer, proj), pair in found.items():
        where = f"{weights_path}: layer {layer} {proj}"
        if layer >= cfg.num_hidden_layers:
            raise AdapterError(f"{where}: the base model has {cfg.num_hidden_layers} layers")
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{where}: lora_A and lora_B must both be present")
        if pair["A"].shape != (rank, ins[proj]) or pair["B"].shape != (outs[proj], rank):
            raise AdapterError(
                f"{where}: shapes {tuple(pair['A'].shape)} and {tuple(pair['B'].shape)} do not "
                f"fit this base model at rank {rank} (expected {(rank, ins[proj])} and "
                f"{(outs[proj], rank)}): is it an adapter of another model?"
            )

    layers: list[dict[str, LoraWeights]] = []
    for layer in range(cfg.num_hidden_layers):
        groups: dict[str, LoraWeights] = {}
        for group, projections in GROUPS.items():
            present = [p for p in projections if (layer, p) in found]
            if not present:
                continue
            # A stacked: [rank * len(present), in]; B block-diagonal over the group's rows.
            a = torch.cat([found[(layer, p)]["A"] for p in present])
            b = torch.zeros(sum(outs[p] for p in projections), a.shape[0])
            row = 0
            for p in projections:
                if p in present:
                    col = present.index(p) * rank
                    b[row : row + outs[p], col : col + rank] = found[(layer, p)]["B"] * scale
                row += outs[p]
            groups[group] = LoraWeights(a.to(device, dtype), b.to(device, dtype))
        layers.append(groups)
    targets = tuple(sorted({p for _, p in found}))
    return Adapter(name, path, rank, float(alpha), targets, layers)


class AdapterRegistry:
    """The adapters a server has loaded, by name. Loading and unloading happen on request
    threads while the engine thread reads: a request takes its Adapter object once, when it
    is admitted, so an unload never pulls weights from under a running request (they are
    freed when its last request ends)."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()

    def load(self, name: str, path: Path, reserved: Sequence[str] = ()) -> Adapter:
        """Loads (or replaces) the adapter `name`; `reserved` names may not be taken (the
        base model's own name)."""
        if name in reserved:
            raise AdapterError(f"{name!r} is the base model's name; choose another adapter name")
        adapter = load_adapter(name, path, self.cfg, self.device, self.dtype)
        with self._lock:
            self._adapters[name] = adapter
        return adapter

    def unload(self, name: str) -> bool:
        with self._lock:
            return self._adapters.pop(name, None) is not None

    def get(self, name: str) -> Adapter | None:
        with self._lock:
            return self._adapters.get(name)

    def list(self) -> list[Adapter]:
        with self._lock:
            return sorted(self._adapters.values(), key=lambda a: a.name)


# --- the batch: which rows of this forward run with which adapter ---------------------------


@dataclass(frozen=True)
class _Group:
    adapter: Adapter
    rows: Tensor | None  # indices into the batch dimension; None: every row


_state = threading.local()


@contextmanager
def lora_batch(row_adapters: Sequence[Adapter | None], device: torch.device) -> Iterator[None]:
    """For the forward inside: batch row i runs with `row_adapters[i]` (None: the base)."""
    by_key: dict[str, tuple[Adapter, list[int]]] = {}
    for i, adapter in enumerate(row_adapters):
        if adapter is not None:
            by_key.setdefault(adapter.key, (adapter, []))[1].append(i)
    if not by_key:
        yield
        return
    everyone = len(row_adapters)
    _state.groups = [
        _Group(
            adapter,
            None if len(rows) == everyone else torch.tensor(rows, dtype=torch.long, device=device),
        )
        for adapter, rows in by_key.values()
    ]
    try:
        yield
    finally:
        _state.groups = None


def add_lora(out: Tensor, x: Tensor, layer: int, group: str) -> Tensor:
    """`out` (x through the fused `group` of `layer`, [B, T, out]) plus each row's adapter
    update, in place; unchanged where no row of the batch has an adapter."""
    groups: list[_Group] | None = getattr(_state, "groups", None)
    if not groups:
        return out
    for g in groups:
        w = g.adapter.layers[layer].get(group)
        if w is None:
            continue
        if g.rows is None:  # the whole batch runs this adapter: no gather, no scatter
            out += (x @ w.a.T) @ w.b.T
            continue
        xs = x.index_select(0, g.rows)
        out.index_add_(0, g.rows, (xs @ w.a.T) @ w.b.T)
    return out


def merged_weight(
    adapter: Adapter, cfg: ModelConfig, layer: int, projection: str, base: Tensor
) -> Tensor:
    """The projection's weight with the adapter merged in (W + scale B A): what a request with
    the adapter computes, as one matrix (tests check the fused layout against it)."""
    group = next(g for g, projections in GROUPS.items() if projection in projections)
    w = adapter.layers[layer].get(group)
    if w is None:
        return base
    outs = _group_sizes(cfg)
    start = sum(outs[p] for p in GROUPS[group][: GROUPS[group].index(projection)])
    return base + w.b[start : start + base.shape[0]] @ w.a
