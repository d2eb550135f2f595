"""torchrun / DistributedDataParallel support.

Under `torchrun --nproc_per_node N` (WORLD_SIZE > 1 in the environment) the trainer joins
the process group (gloo on CPU, nccl on CUDA) and wraps the module in DDP. DDP only syncs
gradients through `forward`, so it wraps `StepAdapter`, whose forward is the family's
`training_step`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    """This process's place in the run; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> DistContext:
        """Join the process group torchrun describes; a plain single-process context otherwise.

        The group, once made, lives until the process exits: a second `fit` in the same process
        (another stage, a resume) reuses it, because re-initialising under torchrun's store can
        meet the previous group's rendezvous keys and hang."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            atexit.register(_leave_group)
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, requested: str | torch.device) -> torch.device:
        """The device for this process: with CUDA under torchrun, the GPU of its local rank."""
        device = torch.device(requested)
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first, the other ranks after it has finished: for work that writes
        a shared folder (synthetic data under --out) which the others then read (and reuse)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """`obj` from every rank, in rank order (pickled over the process group, in memory)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def any(self, *flags: bool, device: torch.device) -> list[bool]:
        """Each flag OR-ed over all ranks, so every rank takes the same branch."""
        if not self.enabled:
            return list(flags)
        values = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def mean(self, values: list[float], device: torch.device) -> list[float]:
        """Each value averaged over all ranks (for logging the global loss)."""
        if not self.enabled or not values:
            return values
        tensor = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [v / self.world_size for v in tensor.tolist()]



def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class StepAdapter(nn.Module):
    """Makes `training_step` the forward pass, so DDP's hooks see it and all-reduce the gradients."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.training_step(batch)


def wrap_ddp(module: nn.Module, ctx: DistContext, device: torch.device,
             find_unused_parameters: bool = False) -> nn.Module:
    """DDP around the adapter; calling the result with a batch runs a synced training step."""
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(StepAdapter(module), device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)
