"""Exponential moving average of the trained weights (Polyak & Juditsky 1992; as used by
e.g. DDPM and EfficientDet): after every update, ema <- decay * ema + (1 - decay) * param."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of `module` whose optimised parameters track the live ones.

    Only the parameters the optimiser updates are averaged; buffers (BatchNorm statistics,
    statistics written by a task's `setup`) and frozen parameters are copied, because
    averaging a constant through float rounding could change it.
    """

    def __init__(self, module: nn.Module, decay: float, params: Iterable[nn.Parameter]):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        tracked = {id(p) for p in params}
        live = dict(module.named_parameters())
        averaged = dict(self.module.named_parameters())
        self._names = [name for name, p in live.items() if id(p) in tracked]
        self._copied = [name for name in live if name not in set(self._names)]
        self._averaged = [averaged[name] for name in self._names]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step from the live module (call after each optimiser update)."""
        live = dict(module.named_parameters())
        current = [live[name].detach() for name in self._names]
        # lerp: ema + (1 - decay) * (param - ema) == decay * ema + (1 - decay) * param
        torch._foreach_lerp_(self._averaged, current, 1.0 - self.decay)
        # Frozen parameters may still change in the loop (a momentum teacher updated inside
        # training_step), so they are copied every step like buffers.
        averaged = dict(self.module.named_parameters())
        dst = [averaged[name] for name in self._copied] + list(self.module.buffers())
        src = [live[name].detach() for name in self._copied] + list(module.buffers())
        if dst:
            torch._foreach_copy_(dst, src)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
