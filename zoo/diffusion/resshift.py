"""ResShift: residual shifting between a high- and a low-quality image (Yue, Wang, Loy, NeurIPS 2023,
arXiv:2307.12348; official code zsyOAOA/ResShift, `models/gaussian_diffusion.py`, S-Lab licence).

The forward process shifts the residual e0 = y0 - x0 from the HQ latent x0 to the LQ latent y0 (paper
Eq. 1-2):   q(x_t | x0, y0) = N(x0 + eta_t * e0, kappa^2 * eta_t * I),   t = 1..T (index 0..T-1 here),
so x_T ~ N(y0, kappa^2 eta_T I) is a noisy LQ image and sampling starts from it (`prior_sample`).

- `exponential_sqrt_etas`: the paper's schedule (Eq. 10): sqrt(eta_t) = sqrt(eta_1) * b0^{beta_t},
  beta_t = ((t-1)/(T-1))^p (T-1), b0 = exp(log(eta_T / eta_1) / (2(T-1))) as the official code
  computes it (`get_named_eta_schedule`: its `increaser` is applied to sqrt(eta), with
  eta_1 = min(min_noise / kappa, min_noise, sqrt(0.001))^2 and sqrt(eta_T) = etas_end). Defaults are
  the released SR configs: T 15, kappa 2.0, power 0.3, etas_end 0.99, min_noise 0.04.
- `ResShiftSchedule`: the tables as buffers (float32, so a graph that indexes them exports), the
  forward sample (Eq. 2), the posterior mean/variance (Eq. 6-7), ResShift's ancestral step and the
  deterministic DDIM-style step SinSR distils from, the input normalisation of the latent networks
  (x / sqrt(kappa^2 eta_t + 1), `_scale_input` with latent_flag) and the x0-prediction loss (Eq. 9,
  unweighted MSE: the configs' `weighted_mse: False`).
- `sample_resshift`: the T-step loop over one `denoise(x_t, t) -> x0` call per step (a graph call),
  so it runs the same over PyTorch and ONNX Runtime.

Timesteps are 0-based indices (0..T-1) as in the official code, which also feeds them to the network's
sinusoidal embedding as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


def exponential_sqrt_etas(steps: int = 15, min_noise: float = 0.04, etas_end: float = 0.99, kappa: float = 2.0,
                          power: float = 0.3) -> torch.Tensor:
    """sqrt(eta_t), t = 0..steps-1, float64 (paper Eq. 10; official `get_named_eta_schedule('exponential')`)."""
    if steps < 2:
        raise ValueError(f"a ResShift schedule needs at least 2 steps, got {steps}")
    start = min(min_noise / kappa, min_noise, math.sqrt(0.001))
    increaser = math.exp(math.log(etas_end / start) / (steps - 1))
    exponent = torch.linspace(0, 1, steps, dtype=torch.float64) ** power * (steps - 1)
    return start * increaser**exponent


def _take(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """table[t] shaped (B, 1, 1, ...) to broadcast against `like`."""
    return table.to(like.device)[t.long()].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class ResShiftSchedule(nn.Module):
    """The residual-shifting tables (non-persistent buffers) and the process built on them."""

    sqrt_etas: Tensor
    etas: Tensor
    etas_prev: Tensor
    alpha: Tensor
    posterior_variance: Tensor
    posterior_log_variance: Tensor
    coef_xt: Tensor
    coef_x0: Tensor
    ddim_k: Tensor
    ddim_m: Tensor
    ddim_j: Tensor
    input_std: Tensor

    def __init__(self, steps: int = 15, kappa: float = 2.0, min_noise: float = 0.04, etas_end: float = 0.99,
                 power: float = 0.3, normalize_input: bool = True) -> None:
        super().__init__()
        self.steps, self.kappa, self.normalize_input = int(steps), float(kappa), bool(normalize_input)
        sqrt_etas = exponential_sqrt_etas(steps, min_noise, etas_end, kappa, power)
        etas = sqrt_etas**2
        etas_prev = torch.cat([torch.zeros(1, dtype=torch.float64), etas[:-1]])
        alpha = etas - etas_prev
        posterior_variance = kappa**2 * etas_prev / etas * alpha  # Eq. 7
        variance_clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]])
        tables = {
            "sqrt_etas": sqrt_etas, "etas": etas, "etas_prev": etas_prev, "alpha": alpha,
            "posterior_variance": posterior_variance, "posterior_log_variance": variance_clipped.log(),
            "coef_xt": etas_prev / etas, "coef_x0": alpha / etas,  # Eq. 6 posterior mean
            # deterministic (DDIM-style) step: x_{t-1} = k x0 + m x_t + j y0 (official `ddim_sample`)
            "ddim_k": 1 - etas_prev + (etas_prev * etas).sqrt() - (etas_prev / etas).sqrt(),
            "ddim_m": (etas_prev / etas).sqrt(),
            "ddim_j": etas_prev - (etas_prev * etas).sqrt(),
            "input_std": (etas * kappa**2 + 1).sqrt(),
        }
        for name, value in tables.items():
            self.register_buffer(name, value.float(), persistent=False)

    # -- the forward process ---------------------------------------------------------
    def q_sample(self, x0: Tensor, y0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = x0 + eta_t (y0 - x0) + kappa sqrt(eta_t) noise (Eq. 2)."""
        return x0 + _take(self.etas, t, x0) * (y0 - x0) + self.kappa * _take(self.sqrt_etas, t, x0) * noise

    def prior_sample(self, y0: Tensor, noise: Tensor) -> Tensor:
        """x_T = y0 + kappa sqrt(eta_T) noise: where sampling (and the one-step student) starts."""
        return y0 + self.kappa * self.sqrt_etas[-1].to(y0) * noise

    def scale_input(self, x: Tensor, t: Tensor) -> Tensor:
        """The network sees x_t / sqrt(kappa^2 eta_t + 1) (latent inputs have variance ~1)."""
        return x / _take(self.input_std, t, x) if self.normalize_input else x

    # -- the reverse process ---------------------------------------------------------
    def posterior_mean(self, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """mu(x_t, x0) = eta_{t-1}/eta_t x_t + alpha_t/eta_t x0 (Eq. 6)."""
        return _take(self.coef_xt, t, xt) * xt + _take(self.coef_x0, t, xt) * x0

    def ancestral_step(self, x0: Tensor, xt: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_{t-1} ~ N(mu, kappa^2 eta_{t-1}/eta_t alpha_t): ResShift's sampler; no noise at t = 0."""
        std = torch.exp(0.5 * _take(self.posterior_log_variance, t, xt))
        nonzero = (t > 0).to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))
        return self.posterior_mean(x0, xt, t) + nonzero * std * noise

    def ddim_step(self, x0: Tensor, xt: Tensor, y0: Tensor, t: Tensor) -> Tensor:
        """The deterministic step (eta = 0): x_{t-1} = x0 + eta_{t-1} e0 + kappa sqrt(eta_{t-1}) eps_hat."""
        return _take(self.ddim_k, t, xt) * x0 + _take(self.ddim_m, t, xt) * xt + _take(self.ddim_j, t, xt) * y0

    def loss(self, pred_x0: Tensor, x0: Tensor) -> Tensor:
        """The training objective with x0-prediction: mean ||f(x_t, y0, t) - x0||^2 (Eq. 9, unweighted)."""
        return ((pred_x0 - x0) ** 2).mean()


def sample_resshift(denoise: Callable[[Tensor, Tensor], Tensor], schedule: ResShiftSchedule, y0: Tensor,
                    noise: Tensor, draw_noise: Callable[[], Tensor] | None = None, method: str = "ancestral") -> Tensor:
    """T-step sampling from x_T = prior_sample(y0, noise): `denoise(x_t, t) -> x0` once a step,
    then the ancestral step (ResShift; `draw_noise()` gives each step's noise) or the DDIM step."""
    if method not in ("ancestral", "ddim"):
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
    x = schedule.prior_sample(y0, noise)
    for step in reversed(range(schedule.steps)):
        t = torch.full((len(x),), step, dtype=torch.int64)
        x0 = denoise(x, t)
        if method == "ddim":
            x = schedule.ddim_step(x0, x, y0, t)
        else:
            z = draw_noise() if draw_noise is not None and step > 0 else torch.zeros_like(x)
            x = schedule.ancestral_step(x0, x, t, z)
    return x
