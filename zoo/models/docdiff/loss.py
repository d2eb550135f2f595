"""DocDiff training objectives (paper Sec. 3, the frequency-separated training objective; reference
`src/trainer.py` with PRE_ORI and HIGH_LOW_FREQ on, LOSS L2, BETA_LOSS 50).

- L_diff = MSE(r_hat, r) + 2 * MSE(Lap(r_hat), Lap(r))                   (HRR, x_0-prediction)
- L_CP   = MSE(CP, GT) + 2 * MSE(CP - Lap(CP), GT - Lap(GT))              (CP, low-frequency term)
- L      = L_diff + beta * L_CP / T, beta = 50, T = 100

Lap is the 3x3 Laplacian [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]] applied per channel with zero
padding (reference `src/sobel.py`): a high-pass filter, so the diffusion term weights the
residual's edges and CP - Lap(CP) is a low-pass version of the coarse prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


def laplacian(image: torch.Tensor) -> torch.Tensor:
    """Per-channel 3x3 Laplacian, zero padded, same size as the input (B, C, H, W)."""
    channels = image.shape[1]
    kernel = LAPLACIAN.to(image.device, image.dtype).expand(channels, 1, 3, 3)
    return F.conv2d(image, kernel, padding=1, groups=channels)


def diffusion_loss(pred_residual: torch.Tensor, residual: torch.Tensor, high_weight: float = 2.0) -> torch.Tensor:
    """L_diff: MSE on the residual plus `high_weight` x MSE on its Laplacian (high frequencies)."""
    return F.mse_loss(pred_residual, residual) + high_weight * F.mse_loss(laplacian(pred_residual), laplacian(residual))


def coarse_loss(coarse: torch.Tensor, clean: torch.Tensor, low_weight: float = 2.0) -> torch.Tensor:
    """L_CP: pixel MSE plus `low_weight` x MSE of the low-passed images X - Lap(X)."""
    low = F.mse_loss(coarse - laplacian(coarse), clean - laplacian(clean))
    return F.mse_loss(coarse, clean) + low_weight * low


def total_loss(l_diff: torch.Tensor, l_cp: torch.Tensor, timesteps: int = 100, beta: float = 50.0) -> torch.Tensor:
    """L = L_diff + beta * L_CP / T (the reference's `ddpm_loss + BETA_LOSS * pixel_loss / T`)."""
    return l_diff + beta * l_cp / timesteps
