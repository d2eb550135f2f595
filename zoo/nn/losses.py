"""Set-prediction losses shared by the DETR-style families (ViDT, OneFormer, PVD).

- `sigmoid_focal_loss`: Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017),
  Eq. 5 with the alpha-balanced form, normalised by the number of target boxes as in
  Deformable DETR (Zhu et al., ICLR 2021; `models/deformable_detr.py`, `loss_labels`) and ViDT.
- `dice_loss`: Milletari et al. (V-Net, 3DV 2016) with +1 smoothing, as in DETR/Mask2Former.
- `sigmoid_ce_loss`: per-point binary cross-entropy on logits, as Mask2Former's mask loss.
- `point_sample`, `get_uncertain_point_coords_with_randomness`, `calculate_uncertainty`:
  PointRend-style point sampling (Kirillov et al., CVPR 2020, Sec. 3.1 "training"), which
  Mask2Former (Cheng et al., CVPR 2022, Sec. 4 "improving training efficiency") and OneFormer
  use to compute mask losses on K = 12544 points instead of the full mask: sample k*K
  uniform points (oversample k = 3), keep the beta*K (beta = 0.75) most uncertain ones and add
  (1 - beta)*K uniform ones.
- `point_mask_losses`: the two Mask2Former mask losses (BCE and dice) on those points.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0,
    mean_dim: int | None = None,
) -> Tensor:
    """Alpha-balanced focal loss on logits (Lin et al. 2017, Eq. 5), reduced and divided by `num_boxes`.

    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with p_t = p for positives and 1 - p for
    negatives, alpha_t = alpha for positives and 1 - alpha for negatives (alpha < 0 disables
    the balance). `inputs` and `targets` (one-hot, float) share a shape, usually
    `(B, Q, C)`. The DETR-family function reduces as `loss.mean(1).sum() / num_boxes`:
    - `mean_dim=None` (default) sums over everything: Deformable DETR's `loss_labels` multiplies
      that function by Q (`... * src_logits.shape[1]`), which for `(B, Q, C)` inputs equals the
      plain sum divided by `num_boxes`;
    - `mean_dim=1` is that function as it stands (no x Q), as ViDT+'s token labeling calls it on
      `(B, h*w, C)` tokens (official vidt-plus `methods/segmentation.py` `sigmoid_focal_loss`):
      averaged over dim 1, summed over the rest, divided by `num_boxes`.
    """
    # The per-element loss is torchvision's (same Eq. 5, same alpha_t); only the reduction is
    # ours, because torchvision reduces by "mean"/"sum" only, not by num_boxes (nor mean over dim 1).
    loss = tv_sigmoid_focal_loss(inputs, targets, alpha=alpha, gamma=gamma, reduction="none")
    if mean_dim is not None:
        loss = loss.mean(mean_dim)
    return loss.sum() / num_boxes


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Dice loss on logits: 1 - (2|X n Y| + 1) / (|X| + |Y| + 1) per mask, summed over masks / `num_masks`.

    `inputs` (logits) and `targets` (0/1) are `(N, ...)`; everything after dim 0 is one mask.
    """
    probs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_ce_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Binary cross-entropy on logits, averaged over each mask's points, summed over masks / `num_masks`."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.flatten(1).mean(1).sum() / num_masks


def point_sample(input: Tensor, point_coords: Tensor, align_corners: bool = False, **kwargs) -> Tensor:
    """Sample `input` `(N, C, H, W)` at normalised points in [0, 1] x [0, 1] (x, y order).

    `point_coords` is `(N, P, 2)` (returns `(N, C, P)`) or `(N, Hg, Wg, 2)` (returns
    `(N, C, Hg, Wg)`). A thin wrapper of `F.grid_sample`, which wants [-1, 1] coordinates.
    Mask2Former always calls it with `align_corners=False`, our default.
    """
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * point_coords - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of single-channel mask logits `(R, 1, ...)`: -|logit| (highest at the decision boundary)."""
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor] = calculate_uncertainty,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Importance point sampling (PointRend, Sec. 3.1): `(N, 1, H, W)` logits -> `(N, num_points, 2)` in [0, 1].

    Draws `int(num_points * oversample_ratio)` uniform points, keeps the
    `int(importance_sample_ratio * num_points)` with the highest `uncertainty_func` value
    and fills the rest with fresh uniform points. Defaults are Mask2Former's/OneFormer's
    (12544 = 112^2 points, oversample 3, importance 0.75).
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    n = coarse_logits.shape[0]
    device, dtype = coarse_logits.device, coarse_logits.dtype
    num_sampled = int(num_points * oversample_ratio)
    point_coords = torch.rand(n, num_sampled, 2, generator=generator, device=device, dtype=dtype)
    point_logits = point_sample(coarse_logits, point_coords, align_corners=False)
    # Uncertainty is computed on the sampled logits, not the coarse map, so that a point
    # between two coarse cells of opposite sign scores as uncertain (PointRend's note).
    point_uncertainties = uncertainty_func(point_logits)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]
    chosen = torch.gather(point_coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        extra = torch.rand(n, num_random, 2, generator=generator, device=device, dtype=dtype)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen


def point_mask_losses(
    src_masks: Tensor,
    target_masks: Tensor,
    num_masks: float,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask2Former's mask losses for matched pairs: (sigmoid BCE, dice) on importance-sampled points.

    `src_masks` are logits `(N, h, w)` (any resolution), `target_masks` 0/1 `(N, H, W)`.
    Points are chosen without gradient from the predictions' uncertainty, then both the
    prediction and the target are sampled there (bilinear), as in `criterion.py` `loss_masks`.
    """
    src = src_masks[:, None].float()
    tgt = target_masks[:, None].to(src.dtype)
    if src.shape[0] == 0:
        zero = src.sum() * 0.0
        return zero, zero
    with torch.no_grad():
        coords = get_uncertain_point_coords_with_randomness(
            src, calculate_uncertainty, num_points, oversample_ratio, importance_sample_ratio, generator
        )
        point_labels = point_sample(tgt, coords, align_corners=False).squeeze(1)
    point_logits = point_sample(src, coords, align_corners=False).squeeze(1)
    return sigmoid_ce_loss(point_logits, point_labels, num_masks), dice_loss(point_logits, point_labels, num_masks)
