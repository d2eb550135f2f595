"""The sLCT training objective: improved consistency training (iCT) in latent space, with each of
the paper's changes behind a switch.

Paper: Dao et al., "Improved Training Technique for Latent Consistency Models", ICLR 2025. The
exact forms follow the authors' code (quandao10/LCT `models/karras_diffusion.py`
`KarrasDenoiser.consistency_losses`, `train_cm_latent.py`, `models/optimal_transport.py`):

- consistency term (iCT; sLCT, latent consistency training): x_i = x + sigma_i z and x_{i+1} = x + sigma_{i+1} z
  with the same z; student f(x_i, sigma_i); target sg[f(x_{i+1}, sigma_{i+1})], the current
  student under stop-gradient (iCT's EMA rate 0: no teacher network); weight
  lambda = 1 / (sigma_i - sigma_{i+1}); i from the discretised lognormal (iCT's noise schedule);
- robust distance: Cauchy (sLCT, "Cauchy loss") or Pseudo-Huber (iCT);
- diffusion loss at early timesteps (sLCT);
- OT coupling of data and noise within the minibatch (sLCT, OT coupling);
- the adaptive c (sLCT, adaptive scaling-c scheduler) is chosen by the caller (`zoo.diffusion.consistency.loss_scale_c`);
- Non-scaling LayerNorm (sLCT) lives in the network (`model.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from zoo.diffusion.consistency import karras_sigmas, lognormal_step_weights, sample_step_indices

LOSSES = ("cauchy", "pseudo-huber")


def _mean_sq(delta: Tensor) -> Tensor:
    return delta.float().pow(2).flatten(1).mean(dim=1)


def cauchy_loss(delta: Tensor, c: float) -> Tensor:
    """sLCT's Cauchy loss: the Cauchy (Lorentzian) robust loss per sample:
    log(1 + mean_d(delta^2) / (2 c^2)), the mean over all dimensions inside the log (authors'
    `loss_norm="cauchy"`: log(0.5 mean_d(delta^2) + c^2) - 2 log c, the same value). Its
    gradient falls off as 1 / |delta| for large residuals, so latent outliers weigh little."""
    return torch.log1p(_mean_sq(delta) / (2.0 * c * c))


def pseudo_huber_loss(delta: Tensor, c: float, reduction: str = "sum") -> Tensor:
    """iCT's Pseudo-Huber metric: the Pseudo-Huber loss per sample: sqrt(||delta||^2 + c^2) - c with the L2 norm
    over all dimensions (`reduction="sum"`, iCT's form with c = 0.00054 sqrt(d)). `reduction="mean"`
    is the authors' latent baseline (`loss_norm="huber"`: sqrt(mean_d(delta^2) + c^2) - c, with the
    same c)."""
    if reduction == "sum":
        sq = delta.float().pow(2).flatten(1).sum(dim=1)
    elif reduction == "mean":
        sq = _mean_sq(delta)
    else:
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return torch.sqrt(sq + c * c) - c


def diffusion_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM's loss weight (Karras et al. 2022, Table 1), used by sLCT's diffusion term:
    (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / sigma^2 + 1 / sigma_data^2."""
    return 1.0 / sigma ** 2 + 1.0 / sigma_data ** 2


@torch.no_grad()
def ot_couple_noise(latents: Tensor, noise: Tensor, return_permutation: bool = False):
    """sLCT's OT coupling, minibatch OT: pair each latent x_i with the noise z_perm[i] that
    minimises sum_i ||x_i - z_perm[i]||^2 over the batch. The authors solve the exact EMD with uniform
    marginals (POT `ot.emd`) on the cost divided by its maximum; with equal batch sizes and uniform
    weights the optimal plan is a permutation, which the Hungarian algorithm (scipy
    `linear_sum_assignment`) finds. Returns the noise reordered (and the permutation if asked);
    the latents, and their labels, keep their order."""
    if latents.shape[0] != noise.shape[0]:
        raise ValueError(f"latents and noise batch sizes differ: {latents.shape[0]} vs {noise.shape[0]}")
    x = latents.detach().flatten(1).to("cpu", torch.float64)
    z = noise.detach().flatten(1).to("cpu", torch.float64)
    cost = torch.cdist(x, z) ** 2
    cost = cost / cost.max().clamp_min(1e-300)
    _, cols = linear_sum_assignment(cost.numpy())
    perm = torch.as_tensor(np.asarray(cols), dtype=torch.long, device=noise.device)
    coupled = noise[perm]
    return (coupled, perm) if return_permutation else coupled


@contextmanager
def _same_rng(device: torch.device) -> Iterator[Callable[[], None]]:
    """Yield a function that rewinds torch's RNG to the state at entry (CPU, and CUDA on a CUDA
    device), so the target forward draws the same dropout / label-dropout masks as the student
    (the authors' `th.set_rng_state(dropout_state)`)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def rewind() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    yield rewind


def consistency_loss(model: Callable[..., Tensor], latents: Tensor, num_scales: int, c: float, *,
                     class_labels: Tensor | None = None, noise: Tensor | None = None,
                     indices: Tensor | None = None, loss: str = "cauchy", huber_reduction: str = "sum",
                     diffusion_loss_weight: float = 5.0, diffusion_start: float = 0.75,
                     ot_coupling: bool = False, sigma_min: float = 0.002, sigma_max: float = 80.0,
                     rho: float = 7.0, sigma_data: float = 0.5, p_mean: float = -1.1,
                     p_std: float = 2.0) -> dict[str, Tensor]:
    """One minibatch of (s)LCT: L = mean_b lambda_b d(f(x_i, sigma_i), sg f(x_{i+1}, sigma_{i+1}))
    + w L_diff.

    - `model(x, sigma (B,), class_labels) -> x0`: the consistency function (a
      `ConsistencyParametrisation`), called twice: the student with gradients, the target under
      no_grad with the same noise z and the same RNG state.
    - `num_scales` N: noise levels of the current curriculum stage (`discretisation_steps`); pair
      indices i in 0 .. N - 2 come from the discretised lognormal(p_mean, p_std) unless `indices`
      gives them; index 0 is sigma_max.
    - `loss`: "cauchy" (sLCT) or "pseudo-huber" (iCT; `huber_reduction` "sum" = iCT's
      L2 norm, "mean" = the authors' latent baseline); `c` its scale.
    - Diffusion loss at early timesteps (sLCT; authors' `diff_indices = indices >=
      int(0.75 N)`): for the samples whose pair index i >= floor(diffusion_start N) (the smallest
      noise levels), (1 / sigma_i^2 + 1 / sigma_data^2) mean_d((f(x_i, sigma_i) - x)^2), the clean
      latent as target, averaged over those samples (0 when there are none), times
      `diffusion_loss_weight` (5 in the paper; 0 turns it off).
    - `ot_coupling`: reorder z by `ot_couple_noise` first (sLCT's OT coupling).

    Returns the scalar "loss" and its parts "consistency" and "diffusion" (unweighted), plus
    "early_fraction" (share of the batch in the diffusion term).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if num_scales < 2:
        raise ValueError(f"need at least 2 noise levels, got {num_scales}")
    batch, device = latents.shape[0], latents.device
    if noise is None:
        noise = torch.randn_like(latents)
    if ot_coupling:
        noise = ot_couple_noise(latents, noise)
    sigmas = karras_sigmas(num_scales, sigma_min, sigma_max, rho)  # float64, descending
    if indices is None:
        indices = sample_step_indices(lognormal_step_weights(sigmas, p_mean, p_std), batch)
    indices = indices.to("cpu", torch.long)
    if indices.min() < 0 or indices.max() > num_scales - 2:
        raise ValueError(f"pair indices must lie in 0 .. {num_scales - 2}")
    sigma64, next64 = sigmas[indices], sigmas[indices + 1]
    weight = (1.0 / (sigma64 - next64)).to(device, torch.float32)  # iCT's weighting, lambda(sigma_i)
    sigma, sigma_next = sigma64.to(device, torch.float32), next64.to(device, torch.float32)
    view = (-1,) + (1,) * (latents.ndim - 1)

    with _same_rng(device) as rewind:
        student = model(latents + sigma.view(view) * noise, sigma, class_labels)
        rewind()
        with torch.no_grad():
            target = model(latents + sigma_next.view(view) * noise, sigma_next, class_labels)
    delta = student.float() - target.detach().float()
    if loss == "cauchy":
        distance = cauchy_loss(delta, c)
    else:
        distance = pseudo_huber_loss(delta, c, huber_reduction)
    consistency = (weight * distance).mean()

    early = (indices >= int(math.floor(diffusion_start * num_scales))).to(device)
    per_sample = diffusion_weight(sigma, sigma_data) * _mean_sq(student.float() - latents.float())
    n_early = early.sum()
    diffusion = (per_sample * early).sum() / n_early.clamp_min(1)
    total = consistency + diffusion_loss_weight * diffusion if diffusion_loss_weight > 0 else consistency
    return {"loss": total, "consistency": consistency.detach(), "diffusion": diffusion.detach(),
            "early_fraction": n_early.float() / batch}
