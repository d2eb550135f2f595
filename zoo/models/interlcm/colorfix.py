"""The wavelet colour fix InterLCM applies at inference (the official `--colorfix_type wavelet`, "used in
paper"; from StableSR, Wang et al. 2023, Sec. 3.4): the restored image keeps its high-frequency detail and
takes its low frequencies (colour, shading) from the LQ input.

A dilated a-trous decomposition: `levels` passes of a 3x3 binomial blur ([1, 2, 1]^T [1, 2, 1] / 16) with
dilation 2^i and replicate padding; high = image - the last low-pass. Output = high(restored) +
low(LQ). Tensor-only, so it runs as plain torch after any backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _blur(image: Tensor, dilation: int) -> Tensor:
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    kernel = (kernel[:, None] * kernel[None, :]) / 16.0
    channels = image.shape[1]
    weight = kernel.expand(channels, 1, 3, 3).contiguous()
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, weight, groups=channels, dilation=dilation)


def wavelet_split(image: Tensor, levels: int = 5) -> tuple[Tensor, Tensor]:
    """(high, low) with high + low == image: low is `levels` dilated blurs (dilation 1, 2, 4, ...)."""
    low = image
    for i in range(levels):
        low = _blur(low, 2 ** i)
    return image - low, low


def wavelet_color_fix(restored: Tensor, lq: Tensor, levels: int = 5) -> Tensor:
    """restored, lq: (B, 3, H, W) in [0, 1], the same size -> high(restored) + low(lq), clamped to [0, 1].
    A padding of `2 ** levels` pixels can exceed a small image: levels shrink to what the image allows."""
    side = min(restored.shape[-2:])
    while levels > 0 and 2 ** (levels - 1) >= side:
        levels -= 1
    high, _ = wavelet_split(restored, levels)
    _, low = wavelet_split(lq.to(restored.dtype), levels)
    return (high + low).clamp(0, 1)
