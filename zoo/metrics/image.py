"""Image-restoration metrics: PSNR and SSIM (torchmetrics), and two high-frequency errors used to
test DocDiff's claim that the residual diffusion restores what regression smooths away:

- `laplacian_error`: mean squared difference of the 3x3 Laplacians (high-pass energy of the
  error; a blurry prediction of a sharp page scores high);
- `edge_f1`: F-score between thresholded Sobel edge maps of prediction and target.

Images are float tensors (B, C, H, W) or (C, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

_LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])
_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def _batch(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x[None] if x.dim() == 3 else x


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB over the whole batch, data range 1 (torchmetrics)."""
    return float(peak_signal_noise_ratio(_batch(pred).clamp(0, 1), _batch(target), data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5), data range 1 (torchmetrics)."""
    return float(structural_similarity_index_measure(_batch(pred).clamp(0, 1), _batch(target), data_range=1.0))


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.to(x).expand(c, 1, 3, 3), groups=c)


def laplacian_error(pred: torch.Tensor, target: torch.Tensor) -> float:
    """mean((Lap(pred) - Lap(target))^2), replicate padding so page borders add nothing."""
    p, t = _batch(pred).clamp(0, 1), _batch(target)
    return float(((_filter(p, _LAPLACIAN) - _filter(t, _LAPLACIAN)) ** 2).mean())


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of the grey image (channel mean), (B, 1, H, W)."""
    grey = _batch(image).mean(dim=1, keepdim=True)
    gx = _filter(grey, _SOBEL_X)
    gy = _filter(grey, _SOBEL_X.t())
    return torch.sqrt(gx**2 + gy**2)


def edge_f1(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """F-score of the edge pixels (Sobel magnitude > threshold) of pred against target's."""
    p = sobel_magnitude(_batch(pred).clamp(0, 1)) > threshold
    t = sobel_magnitude(target) > threshold
    tp = float((p & t).sum())
    precision = tp / max(float(p.sum()), 1.0)
    recall = tp / max(float(t.sum()), 1.0)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def restoration_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """All four at once: psnr, ssim, laplacian_error, edge_f1."""
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target),
            "laplacian_error": laplacian_error(pred, target), "edge_f1": edge_f1(pred, target)}


# --------------------------------------------------------------------------- super-resolution (HF-Diff)


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB in [0, 1], in [16/255, 235/255] (MATLAB `rgb2ycbcr`, the SR convention)."""
    x = _batch(image)
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * weights).sum(dim=1, keepdim=True) + 16.0) / 255.0


def _shave(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border : x.shape[-2] - border, border : x.shape[-1] - border] if border else x


def psnr_y(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> float:
    """PSNR on the Y channel (torchmetrics), `border` pixels shaved on each side (SR papers shave the scale)."""
    p, t = _shave(rgb_to_y(_batch(pred).clamp(0, 1)), border), _shave(rgb_to_y(target), border)
    return float(peak_signal_noise_ratio(p, t, data_range=1.0))


def ssim_y(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> float:
    """SSIM on the Y channel (torchmetrics, Gaussian window 11, sigma 1.5)."""
    p, t = _shave(rgb_to_y(_batch(pred).clamp(0, 1)), border), _shave(rgb_to_y(target), border)
    return float(structural_similarity_index_measure(p, t, data_range=1.0))


def haar_bands(image: torch.Tensor, levels: int = 1) -> list[torch.Tensor]:
    """Orthonormal Haar detail bands (LH, HL, HH stacked, (B, 3C, H/2^l, W/2^l)) of each level, finest first."""
    x = _batch(image)
    out = []
    for _ in range(levels):
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
        a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
        c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        out.append(torch.cat([(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2], dim=1))
        x = (a + b + c + d) / 2
    return out


def wavelet_hf_error(pred: torch.Tensor, target: torch.Tensor, levels: int = 2) -> float:
    """High-frequency error: mean squared difference of the Haar detail bands over `levels` levels
    (energy of the error in the wavelet high-pass bands, summed over levels, per pixel of the input);
    a blurry prediction of a sharp image scores high, as does hallucinated texture that is wrong."""
    p, t = _batch(pred).clamp(0, 1), _batch(target)
    total = 0.0
    for bp, bt in zip(haar_bands(p, levels), haar_bands(t, levels)):
        total += float(((bp - bt) ** 2).sum()) / t[..., :1, :, :].numel() / t.shape[1]
    return total


def sr_metrics(pred: torch.Tensor, target: torch.Tensor, border: int = 4) -> dict[str, float]:
    """PSNR-Y, SSIM-Y (border shaved) and the wavelet high-frequency error of an SR result."""
    return {"psnr_y": psnr_y(pred, target, border), "ssim_y": ssim_y(pred, target, border),
            "hf_error": wavelet_hf_error(pred, target)}
