"""The UQR mask codec of ViDT+ (arXiv 2204.07962, "Unified Query Representation").

A binary instance mask, cropped to its box and resized to `mask_size` x `mask_size` (128), is
represented by the first `vector_dim` (256) coefficients of its 2-D DCT taken in zig-zag order
(low frequencies first), as in SOLQ (Dong et al., NeurIPS 2021), whose `ProcessorDCT` the official
`methods/vidt/dct.py` reuses. The official code computes `cv2.dct` (an orthonormal DCT-II) and
keeps `coeffs.flatten()[zigzag_table[:n_keep]]`; decoding puts the kept coefficients back in
zig-zag order, zero-fills the rest, runs `cv2.idct` and thresholds at the midpoint of the
reconstruction's range.

Here the DCT is a pair of matrix products with the orthonormal DCT-II matrix (pure torch, batched,
differentiable, identical to `cv2.dct` / `scipy.fft.dctn(norm="ortho")`), and the zig-zag scan
is a precomputed index table. `crop_and_resize` and `paste_masks` are the box <-> mask-grid
resamplings of the official criterion (detectron2 `BitMasks.crop_and_resize`, ROIAlign with
`aligned=True`) and postprocessor (detectron2 `paste_masks_in_image`).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=8)
def zigzag_indices(size: int) -> tuple[int, ...]:
    """Row-major flat indices `r * size + c` of a `size` x `size` grid in JPEG zig-zag order.

    The scan of the official `ProcessorDCT.zigzag`: (0,0), (0,1), (1,0), (2,0), (1,1), (0,2), (0,3), ...
    Anti-diagonal d = r + c is walked upwards (row decreasing) when d is even and downwards
    when d is odd.
    """
    order = []
    for d in range(2 * size - 1):
        rows = range(max(0, d - size + 1), min(d, size - 1) + 1)
        rows = reversed(rows) if d % 2 == 0 else rows
        order.extend(r * size + (d - r) for r in rows)
    return tuple(order)


@functools.lru_cache(maxsize=8)
def _dct_matrix(size: int) -> Tensor:
    """Orthonormal DCT-II matrix D (size x size): D[k, n] = s_k cos(pi (2n + 1) k / (2 size))."""
    n = torch.arange(size, dtype=torch.float64)
    k = n[:, None]
    mat = torch.cos(math.pi * (2 * n[None, :] + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    mat[0] /= math.sqrt(2.0)
    return mat.float()


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two (square) dims: D X D^T (= `cv2.dct`)."""
    d = _dct_matrix(x.shape[-1]).to(x)
    return d @ x @ d.T


def idct2(y: Tensor) -> Tensor:
    """Inverse of `dct2`: D^T Y D (= `cv2.idct`)."""
    d = _dct_matrix(y.shape[-1]).to(y)
    return d.T @ y @ d


def encode(masks: Tensor, vector_dim: int = 256, mask_size: int = 128) -> Tensor:
    """Masks `(N, H, W)` (bool or float in [0, 1]) -> UQR vectors `(N, vector_dim)`.

    Masks not already `mask_size` square are resized bilinearly and re-binarised at 0.5 (the
    official crops with ROIAlign and thresholds at 0.5, see `crop_and_resize`); then the first
    `vector_dim` zig-zag coefficients of the orthonormal DCT are kept.
    """
    m = masks.float()
    if m.shape[-2:] != (mask_size, mask_size):
        if m.shape[0] == 0:
            m = m.new_zeros(0, mask_size, mask_size)
        else:
            m = F.interpolate(m[:, None], size=(mask_size, mask_size), mode="bilinear", align_corners=False)[:, 0]
        m = (m >= 0.5).float()
    coeffs = dct2(m).flatten(1)
    index = torch.tensor(zigzag_indices(mask_size)[:vector_dim], device=coeffs.device)
    return coeffs[:, index]


def decode(vectors: Tensor, mask_size: int = 128) -> Tensor:
    """UQR vectors `(N, K)` -> soft masks `(N, mask_size, mask_size)` in [0, 1]: the zero-filled
    zig-zag coefficients through the inverse DCT, clamped."""
    n, k = vectors.shape
    full = vectors.new_zeros(n, mask_size * mask_size)
    index = torch.tensor(zigzag_indices(mask_size)[:k], device=vectors.device)
    full[:, index] = vectors
    return idct2(full.view(n, mask_size, mask_size)).clamp(0.0, 1.0)


def decode_binary(vectors: Tensor, mask_size: int = 128) -> Tensor:
    """UQR vectors -> binary masks `(N, mask_size, mask_size)` float 0/1, thresholded as the official
    postprocessor does: above (max + min) / 2 of each raw reconstruction."""
    n, k = vectors.shape
    full = vectors.new_zeros(n, mask_size * mask_size)
    index = torch.tensor(zigzag_indices(mask_size)[:k], device=vectors.device)
    full[:, index] = vectors
    raw = idct2(full.view(n, mask_size, mask_size)).flatten(1)
    mid = (raw.amax(1, keepdim=True) + raw.amin(1, keepdim=True)) / 2
    return (raw > mid).float().view(n, mask_size, mask_size)


def crop_and_resize(masks: Tensor, boxes_xyxy: Tensor, size: int) -> Tensor:
    """Crop each mask `(N, H, W)` to its box (pixel xyxy) and resample to `(N, size, size)` bool.

    detectron2 `BitMasks.crop_and_resize` (used by the official `loss_masks`): ROIAlign with
    `aligned=True` (pixel centres at +0.5), adaptive sampling ratio, then >= 0.5.
    """
    if masks.shape[0] == 0:
        return torch.zeros(0, size, size, dtype=torch.bool, device=masks.device)
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(boxes_xyxy), device=masks.device, dtype=torch.float32)[:, None],
                      boxes_xyxy.float().to(masks.device)], dim=1)
    out = roi_align(masks.float()[:, None], rois, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return out[:, 0] >= 0.5


def paste_masks(masks: Tensor, boxes_xyxy: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Paste box-local masks `(N, M, M)` (values in [0, 1]) into `(N, height, width)` bool image masks.

    detectron2 `paste_masks_in_image`: each image pixel centre (x + 0.5, y + 0.5) is mapped into its
    box's M x M grid and sampled bilinearly (zero outside the box), then thresholded.
    """
    n = masks.shape[0]
    if n == 0:
        return torch.zeros(0, height, width, dtype=torch.bool, device=masks.device)
    boxes = boxes_xyxy.float().to(masks.device)
    x0, y0, x1, y1 = boxes.unbind(1)
    xs = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    gx = (xs[None, :] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1  # (N, W)
    gy = (ys[None, :] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1  # (N, H)
    grid = torch.stack([gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], dim=3)
    pasted = F.grid_sample(masks.float()[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return pasted[:, 0] >= threshold
