"""``torchrun`` support shared by every multi-process job: joining the process group, barriers,
DDP wrapping and reductions.

The GAN trainer (:mod:`dsa_plugin.gan.trainer`) and the night-cache builder
(:mod:`dsa_plugin.night.cache`) both run under torchrun; they share this one implementation so
that both join a group the same way (an existing group is joined, otherwise one is created from
torchrun's environment) and neither package has to import the other.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment and no initialised group) everything is
a no-op and the job runs single-process.

Example:
    >>> ctx = DistContext.from_env("cpu")
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext"]


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
    def from_env(cls, device: str = "cpu", timeout: datetime.timedelta | None = None) -> "DistContext":
        """Join the process group already initialised in this process, or else read torchrun's
        RANK / WORLD_SIZE / LOCAL_RANK and init one (NCCL for a CUDA ``device``, gloo otherwise;
        ``timeout`` as in ``init_process_group``) when world > 1."""
        dev = torch.device(device)
        joined = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=dev)
        rank = dist.get_rank() if joined else int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            # one GPU per process: the local rank picks it (cuda:N in the config is ignored)
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not joined:
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, **({} if timeout is None else {"timeout": timeout}))
        return cls(rank=rank, world_size=world, local_rank=local, device=dev, initialized_here=not joined)

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
