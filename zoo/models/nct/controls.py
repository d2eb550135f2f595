"""Control-signal models C (NCT's c ~ p(c | x), Sec. 3): each turns images into the control image
an adapter is conditioned on, and scores how well an output follows a control.

All controls map images (B, 3, H, W) in [0, 1] to control images of the same size in [0, 1], so
every control is one card input of kind "image" and one adapter input of the same shape.

- `canny`: Canny edges (scikit-image, sigma 2 px up to 64-px images and 1 px above; hysteresis
  thresholds 0.1 / 0.2 of the gradient range), white on black.
- `lowres`: the paper's 8x super-resolution control: area-downsampled by 8 and brought back to full
  size with nearest neighbours (so the control image shows the pixels the output must reproduce).
- `colour`: a colour layout (T2I-Adapter's "color" control, which the issue asks for): the image
  blurred (Gaussian, sigma = size / 16) and posterised to 4 levels a channel.

Consistency (Table 1's "Consistency"): the distance between a control c and the control re-extracted
from the output, h(x). The paper does not say which distance; ours is the mean absolute difference
in [0, 1] for every control, so 0 means the output follows its control exactly; Canny maps are compared
after a Gaussian blur of 1 px (on 32-px images a binary comparison counts a one-pixel shift of an edge
as a whole miss).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CONTROLS = ("canny", "lowres", "colour")
LOWRES_FACTOR = 8
COLOUR_LEVELS = 4
EDGE_TOLERANCE_SIGMA = 1.0  # px, the Canny consistency's tolerance


def _check(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"control extraction takes images (B, 3, H, W), got {tuple(images.shape)}")
    return images.float().clamp(0, 1)


def canny_edges(images: Tensor, sigma: float | None = None, low: float = 0.1, high: float = 0.2) -> Tensor:
    """Canny edge maps (B, 3, H, W) in {0, 1} (the map repeated over 3 channels). sigma: the Gaussian
    before the gradient; None: 2 px up to 64-px images, 1 px above (at 32 px, sigma 1 draws the base
    generator's background texture as much as its shapes: 12 % of pixels are edges, 6 % at sigma 2)."""
    from skimage.feature import canny

    images = _check(images)
    if sigma is None:
        sigma = 2.0 if max(images.shape[-2:]) <= 64 else 1.0
    grey = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).cpu().numpy()
    edges = np.stack([canny(g, sigma=sigma, low_threshold=low, high_threshold=high) for g in grey])
    return torch.from_numpy(edges.astype(np.float32))[:, None].expand(-1, 3, -1, -1).contiguous().to(images.device)


def low_resolution(images: Tensor, factor: int = LOWRES_FACTOR) -> Tensor:
    """The image area-averaged over factor x factor blocks, shown at full size (nearest)."""
    images = _check(images)
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"the lowres control needs sides divisible by {factor}, got {h}x{w}")
    small = F.avg_pool2d(images, factor)
    return F.interpolate(small, size=(h, w), mode="nearest")


def colour_layout(images: Tensor, levels: int = COLOUR_LEVELS) -> Tensor:
    """Gaussian-blurred (sigma = side / 16) and posterised to `levels` values a channel."""
    images = _check(images)
    sigma = max(images.shape[-1] / 16.0, 0.5)
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return torch.round(blurred * (levels - 1)) / (levels - 1)


EXTRACTORS: dict[str, Callable[[Tensor], Tensor]] = {"canny": canny_edges, "lowres": low_resolution, "colour": colour_layout}


def extract_control(kind: str, images: Tensor) -> Tensor:
    """C(x) for control `kind` on images (B, 3, H, W) in [0, 1]."""
    if kind not in EXTRACTORS:
        raise ValueError(f"unknown control {kind!r}; known: {', '.join(CONTROLS)}")
    with torch.no_grad():
        return EXTRACTORS[kind](images)


def _soften(edges: Tensor, sigma: float = EDGE_TOLERANCE_SIGMA) -> Tensor:
    """Edge maps blurred by a Gaussian (sigma in pixels), so a one-pixel shift costs part of an edge, not all."""
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=edges.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(edges.shape[1], 1, 1, 1)
    out = F.conv2d(F.pad(edges.float(), (radius, radius, 0, 0)), kernel, groups=edges.shape[1])
    return F.conv2d(F.pad(out, (0, 0, radius, radius)), kernel.transpose(-1, -2), groups=edges.shape[1])


def control_consistency(kind: str, controls: Tensor, outputs: Tensor) -> Tensor:
    """Per image (B,): mean |c - h(x)| between the controls and the controls re-extracted from the outputs
    (Canny maps compared after a Gaussian blur of sigma 1 px: a one-pixel tolerance)."""
    again = extract_control(kind, outputs)
    controls = controls.float().to(again.device)
    if kind == "canny":
        controls, again = _soften(controls), _soften(again)
    return (controls - again).abs().flatten(1).mean(1)
