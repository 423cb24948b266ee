"""``torchrun`` support: process-group setup (NCCL on CUDA, gloo on CPU), DDP wrapping, reductions.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) everything is a no-op and the trainer
runs single-process.

Example:
    >>> ctx = DistContext.from_env("cpu")
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "cpu") -> "DistContext":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; init the process group when world > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        dev = torch.device(device)
        if world <= 1:
            return cls(device=dev)
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            # one GPU per process: the local rank picks it (cuda:N in the config is ignored)
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        here = False
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
            here = True
        return cls(rank=rank, world_size=world, local_rank=local, device=dev, initialized_here=here)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP around ``module`` when distributed (parameters must already be on the device)."""
        if not self.enabled or not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # default buffer sync: BN running stats follow rank 0 at every forward
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average of ``values`` over processes (a copy; unchanged when single-process)."""
        if not self.enabled:
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
