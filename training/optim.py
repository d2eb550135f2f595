"""Optimiser and learning-rate schedule built from a `TrainConfig`.

The schedule is one pure function, `lr_multiplier(step, config)`, wrapped in a torch
`LambdaLR`, so the value at any step can be computed (and tested) without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zoo.trainable import TrainConfig

OPTIMIZERS = ("adam", "adamw", "sgd", "radam")
SCHEDULES = ("constant", "step", "cosine", "poly")


def check_config(config: TrainConfig) -> None:
    """Raise ValueError naming the first option the loop cannot run with."""
    if config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {config.batch_size}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {config.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if any(not 0.0 < f <= 1.0 for f in config.lr_milestones):
        raise ValueError(f"lr_milestones are fractions of steps in (0, 1], got {config.lr_milestones}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.warmup_steps < 0 or config.grad_clip < 0:
        raise ValueError("warmup_steps and grad_clip must not be negative")
    if config.num_workers < 0:
        raise ValueError(f"num_workers must not be negative, got {config.num_workers}")


def trainable_parameters(module: nn.Module, parameters: Callable[[nn.Module], Any] | None = None) -> Any:
    """The task's parameter groups if it gives them, else every parameter that requires grad."""
    if parameters is not None:
        groups = parameters(module)
        return list(groups)
    return [p for p in module.parameters() if p.requires_grad]


def build_optimizer(module: nn.Module, config: TrainConfig,
                    parameters: Callable[[nn.Module], Any] | None = None) -> torch.optim.Optimizer:
    """Adam (L2 weight decay), AdamW (decoupled weight decay), SGD with momentum, or RAdam (Liu et al.
    2020; L2 weight decay, eps from the config's `eps` field when it has one, e.g. sLCT's 1e-4)."""
    params = trainable_parameters(module, parameters)
    if not params:
        raise ValueError("the task has no trainable parameters (none requires grad)")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "radam":
        return torch.optim.RAdam(params, lr=config.lr, betas=tuple(config.betas), eps=getattr(config, "eps", 1e-8),
                                 weight_decay=config.weight_decay)
    raise ValueError(f"optimizer {config.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Factor on the base learning rate for the update with 0-based index `step`.

    - warmup: linear, (step + 1) / warmup_steps for the first warmup_steps updates, so the
      first update already moves (a zero learning rate would waste it);
    - constant: 1;
    - step: lr_gamma ** (number of milestones passed), a milestone at round(f * steps);
    - cosine: 0.5 * (1 + cos(pi * t)) (SGDR, Loshchilov & Hutter 2017, eq. 5 without restarts);
    - poly: (1 - t) ** lr_power (DeepLab, Chen et al. 2017, sec. 4.1);
    with t = (step - warmup_steps) / (steps - warmup_steps), the progress after warmup.
    """
    warmup = config.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        passed = sum(1 for f in config.lr_milestones if step >= round(f * config.steps))
        return config.lr_gamma ** passed
    t = min(1.0, max(0.0, (step - warmup) / max(1, config.steps - warmup)))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if config.schedule == "poly":
        return (1.0 - t) ** config.lr_power
    raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(SCHEDULES)}")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_multiplier`; stepped once after every optimiser update.

    The lambda is a plain function, so LambdaLR's state dict stores no copy of the config:
    a resumed run uses the config it was given.
    """
    def factor(step: int) -> float:
        return lr_multiplier(step, config)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip all of the optimiser's gradients together by their global L2 norm; returns the norm before clipping."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
