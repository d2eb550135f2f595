"""Noise schedules, the consistency parametrisation, the consistency-training curriculum and
the samplers that loop over one graph call a step.

Sources (facts only; the code is ours):
- Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models" (EDM):
  the sigma schedule (eq. 5), the preconditioning c_skip / c_out / c_in (Table 1) and the
  deterministic Euler / Heun sampler (Algorithm 1).
- Song et al. 2023, "Consistency Models" (CM): the boundary-condition parametrisation
  f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)) with
  c_skip(sigma_min) = 1, c_out(sigma_min) = 0 (Appendix C), and the multistep sampler (Algorithm 1).
- Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models" (iCT): the
  discretisation curriculum N(k) (its improved curriculum), the discretised lognormal distribution of
  noise levels (its improved noise schedule), the weighting lambda = 1 / (sigma_i - sigma_{i+1}) (descending)
  and the Pseudo-Huber constant c = 0.00054 sqrt(d). Paper sections are cited by name: we could not
  check their numbers offline.
- Dao et al. 2025, "Improved Training Technique for Latent Consistency Models" (sLCT), whose code
  (quandao10/LCT, `models/karras_diffusion.py`, `train_cm_latent.py`) fixes the exact forms used
  here: c_noise = 1000 * 0.25 * ln(sigma), the adaptive c(N) schedule, indices counted
  from sigma_max (index 0) down to sigma_min (index N - 1).

Two bugs of the diffusers iCT example script (examples/research_projects/consistency_training)
are avoided on purpose: c_in is 1 / sqrt(sigma^2 + sigma_data^2) (the square root is there), and
c_skip / c_out use sigma - sigma_min, so f(x, sigma_min) = x exactly.

Indexing convention throughout: sigmas are descending, sigmas[0] = sigma_max,
sigmas[N - 1] = sigma_min; a training pair is (sigmas[i], sigmas[i + 1]) for i in 0 .. N - 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
SIGMA_DATA = 0.5
RHO = 7.0

Denoiser = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- schedules


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0 .. n-1, descending from sigma_max to sigma_min (n = 1 gives [sigma_max]).
    float64 by default: the training weights 1 / (sigma_i - sigma_{i+1}) need the precision."""
    if n < 1:
        raise ValueError(f"need at least one noise level, got n={n}")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).to(dtype)


def consistency_scalings(sigma: Tensor, sigma_data: float = SIGMA_DATA,
                         sigma_min: float = SIGMA_MIN) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) of the consistency parametrisation (CM Appendix C; iCT):

        c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)
        c_out  = (sigma - sigma_min) sigma_data / sqrt(sigma^2 + sigma_data^2)
        c_in   = 1 / sqrt(sigma^2 + sigma_data^2)

    so f(x, sigma_min) = x (the boundary condition) for any network output."""
    shifted = sigma - sigma_min
    c_skip = sigma_data ** 2 / (shifted ** 2 + sigma_data ** 2)
    c_out = shifted * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
    c_in = 1.0 / (sigma ** 2 + sigma_data ** 2).sqrt()
    return c_skip, c_out, c_in


def edm_scalings(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) of EDM's preconditioning (Table 1), for a plain diffusion denoiser:
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2)."""
    return consistency_scalings(sigma, sigma_data, sigma_min=0.0)


def noise_conditioning(sigma: Tensor) -> Tensor:
    """c_noise(sigma) = 1000 * 0.25 * ln(sigma) = 250 ln(sigma): the noise label the network sees.

    This is the consistency-models / sLCT convention (`rescaled_t = 1000 * 0.25 * log(sigma + 1e-44)`
    in the authors' `KarrasDenoiser.denoise`; diffusers' `CMStochasticIterativeScheduler.sigma_to_t`),
    EDM's 0.25 ln(sigma) scaled by 1000 for the sinusoidal embeddings. The 1e-44 guard is dropped:
    every sigma used is at least sigma_min > 0 (and 1e-44 vanishes in fp16/bf16 anyway)."""
    return 250.0 * torch.log(sigma)


class ConsistencyParametrisation(nn.Module):
    """f(x, sigma, class) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), class).

    Wraps a raw network F(x_in, noise_labels, class_labels) into the denoiser f that training and
    the samplers call; `forward` is one exportable graph (tensors in, tensor out). `boundary=True`
    uses the consistency scalings (sigma - sigma_min, so f(x, sigma_min) = x); `boundary=False`
    EDM's preconditioning, for a plain diffusion model over the same network. The scalings are
    computed in float32 whatever the network's dtype, and `sigma` may be a (B,) tensor or a scalar.
    """

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA, sigma_min: float = SIGMA_MIN,
                 boundary: bool = True):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min)
        self.boundary = bool(boundary)

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.boundary:
            return consistency_scalings(sigma, self.sigma_data, self.sigma_min)
        return edm_scalings(sigma, self.sigma_data)

    def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None,
                adapter: nn.Module | None = None, condition: Tensor | None = None) -> Tensor:
        """adapter: a ControlNet-style module called on the network's own inputs,
        adapter(x_in, noise_labels, class_labels, condition) -> residuals, which the network
        takes as `control=` (NCT's f_{theta,phi}); None runs the network alone."""
        if not isinstance(sigma, Tensor):
            sigma = torch.tensor(float(sigma))
        sigma = sigma.to(device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        c_skip, c_out, c_in = (c.reshape(-1, *([1] * (x.ndim - 1))) for c in self.scalings(sigma))
        x32 = x.to(torch.float32)
        x_in, noise_labels = (c_in * x32).to(x.dtype), noise_conditioning(sigma)
        if adapter is None:
            out = self.net(x_in, noise_labels, class_labels)
        else:
            out = self.net(x_in, noise_labels, class_labels, control=adapter(x_in, noise_labels, class_labels, condition))
        return (c_skip * x32 + c_out * out.to(torch.float32)).to(x.dtype)


# --------------------------------------------------------------------------- curriculum (iCT)


def discretisation_steps(k: int, total_steps: int, s0: int = 10, s1: int = 640) -> int:
    """iCT's exponential discretisation curriculum: the number of noise levels N at
    training step k of K = total_steps,

        N(k) = min(s0 * 2^floor(k / K'), s1) + 1,   K' = floor(K / (log2 floor(s1 / s0) + 1)),

    so N doubles from s0 + 1 = 11 to s1 + 1 = 641 in equal stages (K' is at least 1 here, so a
    run shorter than the number of stages still reaches s1)."""
    if k < 0 or total_steps < 1:
        raise ValueError(f"need k >= 0 and total_steps >= 1, got k={k}, total_steps={total_steps}")
    stages = math.log2(math.floor(s1 / s0)) + 1
    per_stage = max(1, math.floor(total_steps / stages))
    doublings = k // per_stage
    if doublings >= 63:  # s0 * 2^63 is beyond any s1
        return int(s1) + 1
    return int(min(s0 * 2 ** doublings, s1)) + 1


def lognormal_step_weights(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """iCT's improved noise schedule: the discretised lognormal distribution over the N - 1 training pairs,
    p(i) proportional to erf((ln sigma_i - P_mean) / (sqrt 2 P_std)) - erf((ln sigma_{i+1} - P_mean) / (sqrt 2 P_std))
    (sigmas descending, so each term is positive); returned normalised, length N - 1."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.numel() < 2:
        raise ValueError("need at least two noise levels for one training pair")
    cdf = torch.erf((torch.log(sigmas) - p_mean) / (math.sqrt(2.0) * p_std))
    mass = cdf[:-1] - cdf[1:]
    return mass / mass.sum()


def sample_step_indices(weights: Tensor, batch: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw `batch` pair indices i (0 .. N - 2) from `lognormal_step_weights` (with replacement)."""
    return torch.multinomial(weights.to(torch.float64), batch, replacement=True, generator=generator)


def consistency_weights(sigmas: Tensor) -> Tensor:
    """iCT's weighting function: lambda(sigma_i) = 1 / (sigma_i - sigma_{i+1}) for each pair i (length N - 1)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    return 1.0 / (sigmas[:-1] - sigmas[1:])


def ict_c(data_dim: int) -> float:
    """iCT's Pseudo-Huber metric: the robust-loss constant c = 0.00054 sqrt(d) for data of d dimensions
    (0.0346 for 4 x 32 x 32 latents, the initial c of sLCT)."""
    return 0.00054 * math.sqrt(data_dim)


def adaptive_c(num_scales: int) -> float:
    """sLCT's adaptive scaling-c scheduler fitted to the loss statistics at each N
    (authors' `train_cm_latent.py`, flag `--c-by-loss-std`): c(N) = exp(-1.15 ln(N - 1) - 0.85).
    About 0.0136, 0.0061, 0.0028, 0.0012, 0.00056, 0.00025 at N = 21, 41, 81, 161, 321, 641."""
    if num_scales < 2:
        raise ValueError(f"need N >= 2, got {num_scales}")
    return math.exp(-1.15 * math.log(num_scales - 1) - 0.85)


def loss_scale_c(num_scales: int, data_dim: int, adaptive: bool = True, s0: int = 10) -> float:
    """The robust loss's c at N noise levels: sLCT applies the adaptive c(N) from the second stage
    of the curriculum on (N > s0 + 1) and keeps iCT's 0.00054 sqrt(d) before that (and always when
    `adaptive` is off)."""
    if adaptive and num_scales > s0 + 1:
        return adaptive_c(num_scales)
    return ict_c(data_dim)


# --------------------------------------------------------------------------- samplers


def _randn(shape: Sequence[int], generator: torch.Generator | None, dtype: torch.dtype,
           device: torch.device | str | None) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved (as diffusers' randn_tensor
    does for a CPU generator), so a seeded CPU generator gives the same samples on any device."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=gen_device)
    return noise.to(device) if device is not None else noise


# iCT's two-step sampling (Song & Dhariwal 2023, Sec. 6): the intermediate noise level of CIFAR-10.
TWO_STEP_SIGMA = 0.821


def sampling_sigmas(steps: int, sigma_max: float = 80.0, sigma_min: float = 0.002, rho: float = 7.0) -> list[float]:
    """Noise levels of an n-step consistency sample: [sigma_max] for one step, iCT's
    [sigma_max, 0.821] for two, and the first n levels of an (n + 1)-level Karras grid beyond."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == 1:
        return [sigma_max]
    if steps == 2:
        return [sigma_max, TWO_STEP_SIGMA]
    return [float(s) for s in karras_sigmas(steps + 1, sigma_min, sigma_max, rho)[:-1]]


@torch.no_grad()
def sample_consistency(denoise: Denoiser, shape: Sequence[int], sigmas: Sequence[float],
                       generator: torch.Generator | None = None, sigma_min: float = SIGMA_MIN,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                       noise: Tensor | None = None,
                       draw_noise: Callable[[Sequence[int]], Tensor] | None = None) -> Tensor:
    """CM Algorithm 1, multistep consistency sampling; one `denoise` call a step.

    x = sigmas[0] z; for each sigma_j: x0 = denoise(x, sigma_j); unless it was the last level,
    x = x0 + sqrt(sigma_{j+1}^2 - sigma_min^2) z' with fresh z'. `sigmas` descending (one entry =
    one-step generation); `denoise(x, sigma (B,)) -> x0` is one graph call (PyTorch module, ONNX
    session, ...). `noise` replaces the first draw (x = sigmas[0] * noise). Equal, step for step,
    to diffusers' `CMStochasticIterativeScheduler` with the same sigmas and generator
    (clip_denoised=False: latents are not clipped). `draw_noise(shape)` replaces every draw from
    `generator` (e.g. one generator per image, so an image does not depend on its batch)."""
    if draw_noise is not None:
        def _draw(shape_: Sequence[int], gen: Any, dtype_: torch.dtype, device_: Any) -> Tensor:
            out = draw_noise(tuple(shape_)).to(dtype_)
            return out.to(device_) if device_ is not None else out
    else:
        _draw = _randn
    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise ValueError("need at least one noise level")
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must be strictly descending, got {sigmas}")
    first = noise if noise is not None else _draw(shape, generator, dtype, device)
    x = first.to(device=device if device is not None else first.device, dtype=dtype) * sigmas[0]
    batch = x.shape[0]
    for j, sigma in enumerate(sigmas):
        x0 = denoise(x, torch.full((batch,), sigma, dtype=torch.float32, device=x.device))
        if j + 1 == len(sigmas):
            return x0
        nxt = max(sigmas[j + 1], sigma_min)
        x = x0 + _draw(x.shape, generator, dtype, x.device) * math.sqrt(nxt ** 2 - sigma_min ** 2)
    raise AssertionError("unreachable")


@torch.no_grad()
def sample_diffusion(denoise: Denoiser, shape: Sequence[int], sigmas: Sequence[float],
                     generator: torch.Generator | None = None, method: str = "heun",
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                     noise: Tensor | None = None,
                     draw_noise: Callable[[Sequence[int]], Tensor] | None = None) -> Tensor:
    """EDM Algorithm 1 (deterministic, S_churn = 0): solve dx/dsigma = (x - D(x, sigma)) / sigma
    from sigmas[0] down to 0 over the descending `sigmas` (a final sigma of 0 is appended).

    "euler": x <- x + (sigma_{i+1} - sigma_i) d_i, one call a level (n calls);
    "heun": the same Euler step corrected by the slope at the new point, d' = (x' - D(x', sigma_{i+1})) / sigma_{i+1},
    x <- x + (sigma_{i+1} - sigma_i)(d_i + d')/2, except on the last step to 0 (Euler): 2n - 1 calls.
    x starts at sigmas[0] z (z from `generator`, `draw_noise(shape)` or `noise`). The Euler path equals diffusers'
    `EDMEulerScheduler` on the same sigmas."""
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    levels = [float(s) for s in sigmas]
    if not levels or any(s <= 0 for s in levels):
        raise ValueError(f"sigmas must be positive, got {levels}")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"sigmas must be strictly descending, got {levels}")
    levels.append(0.0)
    if noise is not None:
        first = noise
    elif draw_noise is not None:
        first = draw_noise(tuple(shape))
    else:
        first = _randn(shape, generator, dtype, device)
    x = first.to(device=device if device is not None else first.device, dtype=dtype) * levels[0]
    batch = x.shape[0]

    def slope(x_: Tensor, s: float) -> Tensor:
        return (x_ - denoise(x_, torch.full((batch,), s, dtype=torch.float32, device=x_.device))) / s

    for s, nxt in zip(levels[:-1], levels[1:]):
        d = slope(x, s)
        x_next = x + (nxt - s) * d
        if method == "heun" and nxt > 0:
            x_next = x + (nxt - s) * 0.5 * (d + slope(x_next, nxt))
        x = x_next
    return x
