"""torchrun DDP set-up and teardown: gloo on CPU, NCCL on CUDA; a no-op in a single process.

torchrun passes the rank and world size through the environment (RANK, WORLD_SIZE,
LOCAL_RANK); a plain `fireside train ...` has none and runs as rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group if launched by torchrun; otherwise rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown(dist: Dist) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.enabled:
        tdist.barrier()


def all_reduce_mean(value: torch.Tensor, dist: Dist) -> torch.Tensor:
    """The mean of `value` over ranks (a copy; `value` itself is left alone)."""
    out = value.detach().clone()
    if dist.enabled:
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        out /= dist.world_size
    return out


def wrap_ddp(model: nn.Module, dist: Dist) -> nn.Module:
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP (or torch.compile) wrapper, for saving and optimizer grouping."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
    return unwrap(inner) if isinstance(inner, nn.Module) else model


def shard_fsdp(model: nn.Module, dist: Dist) -> nn.Module:
    """Shard parameters, gradients and optimizer state across ranks (FSDP2), for models whose
    training state does not fit one device. Each transformer block is its own unit, so only
    one block's full weights exist at a time. Shards in place; build optimizers afterwards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    for block in getattr(getattr(model, "model", None), "layers", []):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in unwrap(model).parameters())
