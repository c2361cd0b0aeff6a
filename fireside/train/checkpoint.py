"""Training checkpoints that resume exactly, written so that none is ever half there.

A checkpoint is a directory `RUN_DIR/checkpoints/step-NNNNNN/`:

    model.safetensors     the weights (fp32 master copy); for a LoRA run only the adapter's
                          (the frozen base is the starting model, read again on resume)
    optimizers.pt         each optimizer's state_dict, in order
    rng-rank{R}.pt        python, numpy, torch (and CUDA) RNG states of rank R
    state.json            the caller's state: step, data-loader position, ...
    meta.json             config fingerprint, world size, step

It is written under a hidden temporary name, fsynced, then renamed: a directory named
`step-*` is always complete, and a run killed mid-save leaves only a temporary that the next
load removes. Every rank writes its own RNG file; rank 0 writes the rest. An FSDP-sharded
model is gathered to full tensors first, so its weights file is the same as an unsharded run's.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fireside.errors import RunConfigMismatchError, TrainingError
from fireside.files import swap_dir
from fireside.model.pretrained import save_pretrained
from fireside.model.tokenizer import Tokenizer
from fireside.model.transformer import Transformer
from fireside.train.distributed import Dist, barrier, is_sharded, unwrap

CHECKPOINTS = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d{6,})$")
TMP_PREFIX = ".tmp-"


def config_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What makes two models interchangeable: the architecture, not the token ids that
    export fills in or the dtype the weights happen to have."""
    inner = unwrap(model)
    cfg = getattr(inner, "config", None)
    if cfg is None:
        return {}
    d = dict(cfg.to_hf())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype"):
        d.pop(key, None)
    return d


def full_fingerprint(model: nn.Module, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The model's config fingerprint plus the caller's run settings (batch, schedule, data)."""
    return {**{f"model.{k}": v for k, v in config_fingerprint(model).items()}, **(extra or {})}


def _single_process() -> Dist:
    return Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def _trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in unwrap(model).named_parameters() if p.requires_grad}


def _model_tensors(model: nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    inner = unwrap(model)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    keep = _trainable_names(inner) if trainable_only else None
    # safetensors refuses shared storage, so a tied head is written once (as the embedding).
    for name, t in inner.state_dict().items():
        if t.data_ptr() in seen or (keep is not None and name not in keep):
            continue
        seen.add(t.data_ptr())
        tensors[name] = t.detach().to("cpu").contiguous()
    return tensors


def _full_state_options(*, cpu_offload: bool = False, broadcast: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(
        full_state_dict=True, cpu_offload=cpu_offload, broadcast_from_rank0=broadcast
    )


def _gather(
    model: nn.Module, optimizers: list[torch.optim.Optimizer], trainable_only: bool = False
) -> tuple[dict[str, torch.Tensor], Any]:
    """Full weights and optimizer state. Sharded: a collective every rank joins, and only rank 0
    gets the tensors (on CPU). Otherwise the model's own tensors and each optimizer's state."""
    if not is_sharded(model):
        own = _model_tensors(model, trainable_only)
        return own, [opt.state_dict() for opt in optimizers]
    if trainable_only:
        raise TrainingError("a checkpoint of the trainable weights alone is not made with --fsdp")
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = _full_state_options(cpu_offload=True)
    tensors: dict[str, Any] = get_model_state_dict(model, options=options)
    if not optimizers:
        return tensors, []
    return tensors, get_optimizer_state_dict(model, optimizers, options=options)


def full_model(model: nn.Module, dist: Dist | None = None) -> Transformer | None:
    """An unsharded CPU copy of a sharded model on rank 0 (None on other ranks; every rank must
    call it), or the model itself when it is not sharded."""
    inner = unwrap(model)
    if not is_sharded(inner):
        return inner if isinstance(inner, Transformer) else None
    tensors, _ = _gather(inner, [])
    if dist is not None and not dist.is_main:
        return None
    copy = Transformer(inner.config)  # type: ignore[arg-type]
    copy.load_state_dict(tensors)
    return copy


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    step: int,
    state: dict[str, Any],
    keep_last: int,
    fingerprint: dict[str, Any] | None = None,
    dist: Dist | None = None,
    trainable_only: bool = False,
) -> Path:
    """Write `run_dir/checkpoints/step-{step:06d}/` atomically and prune beyond `keep_last`.

    `state` must be JSON-serialisable; `step` is stored in it. A resume must match the model's
    config and `fingerprint` (the run's other settings). Under DDP every rank calls this.
    `trainable_only`: the weights that train and no others (a LoRA adapter, not its base).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    dist = dist or _single_process()
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{step:06d}"
    tmp = root / f"{TMP_PREFIX}step-{step:06d}"
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(dist)
    torch.save(_rng_state(), tmp / f"rng-rank{dist.rank}.pt")
    tensors, optimizer_state = _gather(model, optimizers, trainable_only)
    barrier(dist)
    if dist.is_main:
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizers.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        meta = {
            "step": step,
            "world_size": dist.world_size,
            "sharded": is_sharded(model),
            "trainable_only": trainable_only,
            "fingerprint": full_fingerprint(model, fingerprint),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        # A step may be saved again (a resumed run that ends where it resumed).
        swap_dir(tmp, final, root / f"{TMP_PREFIX}old-{final.name}")
        _fsync_dir(root)
        for stale in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    barrier(dist)
    return final


def _describe_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(set(saved) | set(wanted))
    diffs = [
        f"{k}: run has {saved.get(k)!r}, now {wanted.get(k)!r}"
        for k in keys
        if saved.get(k) != wanted.get(k)
    ]
    return "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")


def check_fingerprint(run_dir: str | Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    if saved != wanted:
        raise RunConfigMismatchError(
            f"{str(run_dir)!r} holds a run made with a different configuration "
            f"({_describe_mismatch(saved, wanted)}); resume it with the flags it was started "
            "with, or give a new --output directory"
        )


def load_latest_checkpoint(
    run_dir: str | Path,
    *,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    fingerprint: dict[str, Any] | None = None,
    dist: Dist | None = None,
) -> dict[str, Any] | None:
    """Restore model, optimizers and this rank's RNG from the newest checkpoint, in place.

    Returns the saved `state` (with `step`), or None when the run has no checkpoint yet.
    Raises RunConfigMismatchError when the checkpoint was made with another model config or
    other run settings (`fingerprint`, as given to save_checkpoint).
    """
    dist = dist or _single_process()
    root = Path(run_dir) / CHECKPOINTS
    if dist.is_main and root.is_dir():
        for leftover in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a save that was killed mid-way
    barrier(dist)
    found = checkpoint_dirs(run_dir)
    if not found:
        return None
    ckpt = found[-1]
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
        state: dict[str, Any] = json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"checkpoint {str(ckpt)!r} is unreadable: {e}") from None
    check_fingerprint(run_dir, meta["fingerprint"], full_fingerprint(model, fingerprint))
    if meta["world_size"] != dist.world_size:
        raise TrainingError(
            f"checkpoint {str(ckpt)!r} was written by {meta['world_size']} process(es) and this "
            f"run has {dist.world_size}: resume with the same torchrun --nproc_per_node so the "
            "data order and random streams continue exactly"
        )
    if meta.get("sharded", False) != is_sharded(model):
        flag = "with" if meta.get("sharded") else "without"
        raise TrainingError(
            f"checkpoint {str(ckpt)!r} was written {flag} --fsdp; resume it the same way (the "
            "optimizer state is laid out differently)"
        )
    if is_sharded(model):
        _load_sharded(ckpt, model, optimizers, dist)
    else:
        _load_local(ckpt, model, optimizers, meta.get("trainable_only", False))
    rng = torch.load(ckpt / f"rng-rank{dist.rank}.pt", weights_only=False)
    _set_rng_state(rng)
    return state


def _load_local(
    ckpt: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer], trainable_only: bool
) -> None:
    inner = unwrap(model)
    device = next(inner.parameters()).device
    tensors = load_file(str(ckpt / "model.safetensors"), device=str(device))
    missing, unexpected = inner.load_state_dict(tensors, strict=False)
    tied = getattr(getattr(inner, "config", None), "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if trainable_only:  # the frozen weights are the starting model's, loaded already
        trainable = _trainable_names(inner)
        missing = [k for k in missing if k in trainable]
    if missing or unexpected:
        raise TrainingError(
            f"checkpoint {str(ckpt)!r} does not fit the model: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    opt_states = torch.load(ckpt / "optimizers.pt", map_location=device, weights_only=False)
    if len(opt_states) != len(optimizers):
        raise RunConfigMismatchError(
            f"checkpoint {str(ckpt)!r} holds {len(opt_states)} optimizer state(s) but the run "
            f"builds {len(optimizers)}: it was made with a different optimizer set-up"
        )
    for opt, saved in zip(optimizers, opt_states, strict=True):
        opt.load_state_dict(saved)


def _load_sharded(
    ckpt: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer], dist: Dist
) -> None:
    """Rank 0 reads the full state and FSDP broadcasts each rank its shard."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    tensors: dict[str, Any] = {}
    optimizer_state: Any = {}
    if dist.is_main:
        tensors = load_file(str(ckpt / "model.safetensors"))
        optimizer_state = torch.load(ckpt / "optimizers.pt", weights_only=False)
    options = _full_state_options(broadcast=True)
    set_model_state_dict(model, tensors, options=options)
    set_optimizer_state_dict(model, optimizers, optimizer_state, options=options)


def export_hf(
    run_dir: str | Path,
    model: nn.Module,
    tokenizer: Tokenizer,
    generation_config: dict[str, Any] | None = None,
) -> None:
    """Write the HF-format model (config.json, safetensors, tokenizer) at the RUN_DIR root, so
    `fireside serve --model RUN_DIR` and transformers load the run directly."""
    inner = unwrap(model)
    if not isinstance(inner, Transformer):
        raise TypeError(f"export_hf needs a fireside Transformer, got {type(inner).__name__}")
    save_pretrained(inner, tokenizer, run_dir, generation_config)
