"""sLCT training for the shared loop in `training/`: `LCTTrainConfig` (the paper's
hyperparameters and a switch for each of its changes) and `LCTTrainable` (the training step).

Defaults from the authors' `scripts/train_lct.sh` / `train_cm_latent.py` (quandao10/LCT) and MODELS.md:
RAdam, lr 1e-4, weight decay 1e-4 (L2, torch's RAdam default), eps 1e-4, batch 128, no gradient
clipping (their clip call is commented out), an evaluation EMA of rate 0.9999 (the loop's EMA;
the consistency target itself is the current student, iCT's EMA rate 0), curriculum s0 = 10,
s1 = 640, discretised lognormal (-1.1, 2.0), Cauchy loss, diffusion loss weight 5 at the 25 %
smallest noise levels, OT coupling, adaptive c; 1400 epochs of CelebA-HQ 256 (30 000 images,
234 batches an epoch) = 327 600 steps.

The curriculum N(k) needs the update count k, which the loop does not pass to `training_step`:
`LCTTrainable` keeps it in a `step` buffer that counts calls, so it is saved in (and resumed
from) the loop's checkpoints with the rest of the module state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.diffusion.consistency import (ConsistencyParametrisation, adaptive_c, discretisation_steps, ict_c)
from zoo.trainable import TrainConfig, TrainTask

from .loss import LOSSES, consistency_loss


@dataclass
class LCTTrainConfig(TrainConfig):
    """sLCT hyperparameters (paper defaults); each of the paper's changes has its own switch."""

    steps: int = 327_600  # 1400 epochs x 234 batches of 128 (CelebA-HQ 256, 30 000 images)
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "radam"
    eps: float = 1e-4  # RAdam epsilon (read by training.optim.build_optimizer)
    ema_decay: float = 0.9999  # evaluation EMA (the consistency target is the live student)
    loss: str = "cauchy"  # cauchy (sLCT) | pseudo-huber (iCT)
    huber_reduction: str = "sum"  # pseudo-huber only: sum = iCT's L2 norm, mean = the authors' latent baseline
    diffusion_loss_weight: float = 5.0  # sLCT's early-timestep diffusion loss; 0 turns the diffusion term off
    diffusion_start: float = 0.75  # the term covers pair indices i >= floor(0.75 N)
    ot_coupling: bool = True  # sLCT's minibatch OT coupling
    adaptive_c: bool = True  # sLCT's adaptive scaling-c; off: c stays fixed
    c: float = 0.0  # fixed / initial c; 0 = iCT's 0.00054 sqrt(d)
    start_scales: int = 10  # s0 of the curriculum N(k) (iCT's curriculum)
    end_scales: int = 640  # s1
    curriculum_steps: int = 0  # K of the curriculum; 0 = `steps`
    p_mean: float = -1.1  # discretised lognormal over noise levels (iCT's noise schedule)
    p_std: float = 2.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.huber_reduction not in ("sum", "mean"):
            raise ValueError(f"huber_reduction must be 'sum' or 'mean', got {self.huber_reduction!r}")


class LCTTrainable(nn.Module):
    """The consistency model with its training step; `model` is what gets saved.

    batch: {"latent": (B, C, h, w) standardised latents (sigma_data 0.5), "label": (B,) int
    (used when the network is class-conditional)}. The step logs "loss", "consistency",
    "diffusion", "early_fraction", "num_scales" (N) and "c".
    """

    def __init__(self, model: ConsistencyParametrisation, config: LCTTrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def schedule(self, k: int, data_dim: int) -> tuple[int, float]:
        """(N, c) at update k: the curriculum's noise levels and the robust loss's scale."""
        cfg = self.config
        total = cfg.curriculum_steps or cfg.steps
        n = discretisation_steps(k, total, cfg.start_scales, cfg.end_scales)
        if cfg.adaptive_c and n > cfg.start_scales + 1:
            return n, adaptive_c(n)
        return n, cfg.c or ict_c(data_dim)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        latents = batch["latent"]
        net_cfg = getattr(self.model, "config", None)
        labels = batch.get("label") if net_cfg is not None and net_cfg.num_classes > 0 else None
        num_scales, c = self.schedule(int(self.step), latents[0].numel())
        extra = {}
        if net_cfg is not None:
            extra = dict(sigma_min=net_cfg.sigma_min, sigma_max=net_cfg.sigma_max, rho=net_cfg.rho,
                         sigma_data=net_cfg.sigma_data)
        out = consistency_loss(self.model, latents, num_scales, c, class_labels=labels, loss=cfg.loss,
                               huber_reduction=cfg.huber_reduction, diffusion_loss_weight=cfg.diffusion_loss_weight,
                               diffusion_start=cfg.diffusion_start, ot_coupling=cfg.ot_coupling,
                               p_mean=cfg.p_mean, p_std=cfg.p_std, **extra)
        with torch.no_grad():
            self.step += 1
        return {**out, "num_scales": float(num_scales), "c": c}


def build_task(model: ConsistencyParametrisation, dataset: torch.utils.data.Dataset,
               config: LCTTrainConfig) -> TrainTask:
    """A `TrainTask` over a dataset of {"latent", "label"} items; the saved module is the consistency model."""
    return TrainTask(module=LCTTrainable(model, config), dataset=dataset, config=config,
                     to_pipeline=lambda module: module.model)
