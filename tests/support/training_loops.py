"""The short optimisation loop the family training tests share: fit one fixed batch and
return the losses, so each test states only its model, batch and what must fall."""

from __future__ import annotations

from typing import Any

import torch


def fit_one_batch(module: Any, batch: Any, optimizer: torch.optim.Optimizer, steps: int,
                  reseed: int | None = None) -> list[float]:
    """`steps` updates of `module.training_step(batch)`; `reseed` re-seeds torch before every
    step (the same noise each step, so a short run shows the loss fall without sampling noise)."""
    losses = []
    for _ in range(steps):
        if reseed is not None:
            torch.manual_seed(reseed)
        out = module.training_step(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    return losses
