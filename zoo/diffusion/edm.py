"""EDM's denoising score-matching objective (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Sec. 5 and Table 1): the multi-step diffusion baseline that
one-step consistency models are compared with, trained on the same network and latents.

    ln sigma ~ N(P_mean, P_std^2),   n ~ N(0, sigma^2 I)
    L = lambda(sigma) || D(x + n, sigma) - x ||^2,   lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2

with D the EDM-preconditioned denoiser (`ConsistencyParametrisation(..., boundary=False)`), and
P_mean = -1.2, P_std = 1.2 (EDM's defaults). Sampling: `consistency.sample_diffusion` (Heun).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

P_MEAN, P_STD = -1.2, 1.2


def edm_loss(denoiser: Callable[..., Tensor], latents: Tensor, class_labels: Tensor | None = None,
             sigma_data: float = 0.5, p_mean: float = P_MEAN, p_std: float = P_STD) -> dict[str, Tensor]:
    """{"loss": mean over the batch of lambda(sigma) * mean_d (D(x + n, sigma) - x)^2, "sigma_mean"}."""
    batch = latents.shape[0]
    sigma = (torch.randn(batch, device=latents.device) * p_std + p_mean).exp()
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    noisy = latents + torch.randn_like(latents) * sigma.view(-1, *([1] * (latents.ndim - 1)))
    denoised = denoiser(noisy, sigma, class_labels)
    per_sample = (denoised - latents).pow(2).flatten(1).mean(1)
    loss = (weight * per_sample).mean()
    return {"loss": loss, "sigma_mean": sigma.mean().detach()}
