"""NCT's objective (Luo et al. 2025, Sec. 3 and Algorithm 1), for any controlled one-step generator
with `base_generate(z, labels)`, `generate(z, c, labels)` and `decode(latents)` (see model.py).

Noise-space process (Sec. 3.2): z_t = alpha_t z + sigma_t eps with alpha_t = sqrt(1 - sigma_t^2),
sigma_0 = 0, sigma_1 = 1, so z_t ~ N(0, I) for every t and the generator can take it as its noise.
The paper leaves sigma_t and the draw of k open; ours (`noise_level`): sigma_t = sin(pi t / 2)
(alpha_t = cos(pi t / 2), the trigonometric path between z and an independent noise) on the uniform
grid t_k = k / N with N = 16 levels by default, and k drawn uniformly from {0, ..., N - 1}.

- Noise consistency loss: L_con = d(f_{theta,phi}(z_{t_{k+1}}, c), sg[f_{theta,phi}(z_{t_k}, c)]), the
  pair sharing z and eps, the target without gradient (the current adapter, as iCT's target).
- Boundary loss: L_bound = d(f_{theta,phi}(z, c), f_theta(z)), which keeps the adapted generator on the
  base's outputs at t = 0, where c = C(f_theta(z)) is exactly the control of that output.
- Constrained optimisation: min L_con s.t. L_bound <= xi, by primal-dual steps: the adapter minimises
  L_con + lambda L_bound, then lambda <- max(0, lambda + eta (L_bound - xi)) (`dual_update`).
d is the mean squared error (the paper's l2; "pseudo-huber" is the other choice it names) over the
generator's outputs (latents for the lct base).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

DISTANCES = ("l2", "pseudo-huber")


def noise_level(t: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) of our path: sigma_t = sin(pi t / 2), alpha_t = cos(pi t / 2)."""
    angle = t * (math.pi / 2)
    return torch.cos(angle), torch.sin(angle)


def noisy_point(z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """z_t = alpha_t z + sigma_t eps (t: (B,))."""
    alpha, sigma = (v.reshape(-1, *([1] * (z.ndim - 1))).to(z.dtype) for v in noise_level(t))
    return alpha * z + sigma * eps


def distance(a: Tensor, b: Tensor, kind: str = "l2", c: float = 0.0) -> Tensor:
    """d(a, b) averaged over the batch: the mean squared error per element (l2), or iCT's pseudo-Huber
    sqrt(||a - b||^2 + c^2) - c over each sample's elements (c = 0.00054 sqrt(dim) when 0)."""
    if kind == "l2":
        return (a.float() - b.float()).pow(2).mean()
    if kind == "pseudo-huber":
        diff = (a.float() - b.float()).flatten(1)
        c = c or 0.00054 * math.sqrt(diff.shape[1])
        return (torch.sqrt(diff.pow(2).sum(1) + c * c) - c).mean()
    raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {kind!r}")


def dual_update(lam: float, bound: float, xi: float, eta: float) -> float:
    """The dual ascent step of Algorithm 1: lambda <- max(0, lambda + eta (L_bound - xi))."""
    return max(0.0, lam + eta * (bound - xi))


def nct_losses(model: Any, z: Tensor, eps: Tensor, k: Tensor, control: Tensor, base_output: Tensor,
               levels: int, labels: Tensor | None = None, kind: str = "l2",
               consistency: bool = True, boundary: bool = True) -> dict[str, Tensor]:
    """L_con and L_bound of one batch (Algorithm 1, lines 4-8). z, eps: (B, ...) noises; k: (B,) int in
    [0, levels); control: c = C(x) of x = decode(base_output); base_output: f_theta(z) (no gradient)."""
    out: dict[str, Tensor] = {}
    if consistency:
        t_k, t_next = k.float() / levels, (k.float() + 1) / levels
        with torch.no_grad():
            target = model.generate(noisy_point(z, eps, t_k), control, labels)
        out["consistency"] = distance(model.generate(noisy_point(z, eps, t_next), control, labels), target, kind)
    if boundary:
        out["boundary"] = distance(model.generate(z, control, labels), base_output, kind)
    return out
