"""The contract between a model family and the shared training loop in `training/`.

A family describes *what* to train (a module with `training_step`, its data, its
hyperparameters); the loop in `training/` decides *how* (optimiser, schedule, EMA,
AMP, checkpoints, DDP, logging). `zoo` never imports `training`: the loop consumes
these objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainConfig:
    """Hyperparameters every family shares. A family subclasses this dataclass to add its
    own fields and to set the paper's defaults; `zoo train --set key=value` overrides any field."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"  # constant | step | cosine | poly
    lr_milestones: tuple[float, ...] = ()  # fractions of `steps` where a step schedule multiplies by lr_gamma
    lr_gamma: float = 0.1
    lr_power: float = 0.9  # exponent of the poly schedule, (1 - t) ** lr_power
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    ema_decay: float = 0.0  # 0 disables the EMA copy
    amp: bool = False  # autocast (bf16 on CPU, fp16 on CUDA)
    grad_checkpointing: bool = False  # recompute block activations in backward (modules with `gradient_checkpointing`)
    log_every: int = 10
    ckpt_every: int = 200
    eval_every: int = 0  # 0: evaluate only at the end
    num_workers: int = 0

    def override(self, pairs: dict[str, str]) -> TrainConfig:
        """A copy with fields replaced from `key=value` strings, each parsed to the field's type."""
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in pairs.items():
            if key not in known:
                raise ValueError(f"unknown training option {key!r}; known: {', '.join(sorted(known))}")
            changes[key] = _parse_like(getattr(self, key), raw, key)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_like(current: Any, raw: str, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
            kind = type(current[0]) if current else float
            return tuple(kind(p) for p in parts)
        if current is None:
            return raw
        return type(current)(raw)
    except ValueError as err:
        raise ValueError(f"--set {key}={raw}: expected a value like {current!r}") from err


@dataclass
class TrainTask:
    """Everything the loop needs from a family for one training run (one stage).

    - `module`: an nn.Module with `training_step(batch) -> dict[str, Tensor]`; the dict holds
      a scalar `"loss"` (what is minimised) and any other scalars worth logging.
    - `dataset`: a map-style torch Dataset; items must be a deterministic function of the
      index (randomness seeded from the index), so that resuming reproduces the data.
    - `config`: the run's hyperparameters (a TrainConfig subclass).
    - `parameters`: optional param groups for the optimiser (default: all trainable params).
    - `setup(module, loader)`: optional, run once before the first step of a fresh run
      (e.g. EfficientAD's teacher channel statistics); its effect must live in module buffers
      so a resumed run gets it from the checkpoint.
    - `finalize(module) -> metrics`: optional, run after the last step on the (EMA) module
      (e.g. quantile calibration, validation metrics).
    - `evaluate(module) -> metrics`: optional, run every `eval_every` steps and at the end.
    - `to_pipeline(module)`: returns the module whose state dict is saved as the model weights.
    - `extra`: free-form; the loop reads `ddp_find_unused_parameters` (bool, default False)
      for modules whose training_step leaves some trainable parameters unused.
    """

    module: nn.Module
    dataset: torch.utils.data.Dataset
    config: TrainConfig
    collate_fn: Callable | None = None
    parameters: Callable[[nn.Module], Any] | None = None
    setup: Callable[[nn.Module, Any], None] | None = None
    finalize: Callable[[nn.Module], dict[str, float]] | None = None
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    to_pipeline: Callable[[nn.Module], nn.Module] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
