"""Run by test_ddp.py under `torchrun --nproc_per_node 2`: trains a toy task with the
shared Trainer (uninterrupted, and stopped + resumed) and writes each rank's final weights
and the dataset indices it saw."""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from zoo.trainable import TrainConfig, TrainTask
from zoo.training import Trainer


class IndexData(torch.utils.data.Dataset):
    """Item i: a seeded input, a linear target, and i itself (to check the sharding)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = torch.randn(3, generator=torch.Generator().manual_seed(index))
        return {"x": x, "y": x.sum(0, keepdim=True), "index": torch.tensor(index)}


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)
        self.seen: list[int] = []

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.seen.extend(batch["index"].tolist())
        # noise differs by rank (seeded seed + rank): gradients only agree if DDP syncs them
        noise = 0.1 * torch.randn_like(batch["x"])
        return {"loss": (self.linear(batch["x"] + noise) - batch["y"]).pow(2).mean()}


def make_task() -> TrainTask:
    config = TrainConfig(steps=6, batch_size=4, lr=0.05, log_every=1, ckpt_every=3, ema_decay=0.5, grad_clip=1.0)
    return TrainTask(module=Toy(), dataset=IndexData(), config=config)


def main(out_dir: str) -> None:
    """An uninterrupted run in OUT/full, and in OUT/resumed one stopped after 4 steps and resumed."""
    rank = int(os.environ["RANK"])
    full = make_task()
    result = Trainer(full, os.path.join(out_dir, "full"), seed=1, progress=True).fit()
    resumed_dir = os.path.join(out_dir, "resumed")
    stopped = Trainer(make_task(), resumed_dir, seed=1, progress=False, max_steps_this_run=4).fit()
    resumed = Trainer(make_task(), resumed_dir, seed=1, resume=True, progress=False).fit()
    torch.save({"state": result.module.state_dict(), "live": full.module.linear.weight.detach().clone(),
                "seen": full.module.seen, "steps": result.steps_done, "stopped_at": stopped.steps_done,
                "resumed": resumed.module.state_dict()},
               os.path.join(out_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
