"""SeaBird's objectives (official `PanopticBEV/panoptic_bev/algos/semantic_seg.py`,
`modules/heads/detection/loss.py`, `models/panoptic_bev.py`; loss weights from
`experiments/pbev_seabird_kitti360_val.ini`: sem 35, det_* 7 each).

- `dice_loss`: the paper's BEV segmentation loss (Sec. 4.1, Eq. 5; Lemma 2 is why): on clipped
  sigmoid probabilities p and binary targets y, 1 - mean_c (2 sum p y + 1) / (sum p + sum y + 1),
  the sums over the batch and the BEV map of each class c.
- `l1_seg_loss`: the regression-trained segmentation the ablation compares with (mean |p - y|).
- `focal_loss`: CenterNet's penalty-reduced focal loss on the heatmap (Zhou et al. 2019, Eq. 1;
  alpha 2, beta 4), normalised by the number of object centres.
- `masked_smooth_l1` / `masked_bce`: the official `OffSmoothL1Loss` / `BCELoss`: the prediction
  gathered at each object's centre cell, mean over the real objects' entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SEM_WEIGHT = 35.0
DET_WEIGHT = 7.0
DET_TERMS = ("hm", "off", "wh", "h3d", "y3d", "cls_theta")


def dice_loss(probs: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """probs, target (B, C, H, W) -> 1 - mean_c (2 sum(p y) + 1) / (sum p + sum y + 1)."""
    target = target.to(probs.dtype)
    inter = (2 * probs * target).sum(dim=(0, 2, 3))
    union = (probs + target).sum(dim=(0, 2, 3))
    return 1 - ((inter + smooth) / (union + smooth)).mean()


def l1_seg_loss(probs: Tensor, target: Tensor) -> Tensor:
    return (probs - target.to(probs.dtype)).abs().mean()


def focal_loss(pred: Tensor, gt: Tensor) -> Tensor:
    """pred (probabilities, clamped away from 0/1), gt gaussian heatmap with 1 at centres."""
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).to(pred.dtype)
    neg = 1 - pos
    pos_loss = (torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * neg).sum()
    num_pos = pos.sum()
    return -(pos_loss + neg_loss) / num_pos.clamp(min=1.0)


def gather(feat: Tensor, ind: Tensor) -> Tensor:
    """(B, D, H, W) at flat indices ind (B, K) -> (B, K, D)."""
    b, d = feat.shape[:2]
    flat = feat.reshape(b, d, -1).permute(0, 2, 1)
    return flat.gather(1, ind.unsqueeze(-1).expand(-1, -1, d))


def masked_smooth_l1(pred: Tensor, mask: Tensor, ind: Tensor, target: Tensor) -> Tensor:
    p = gather(pred, ind)
    m = mask.bool().unsqueeze(-1).expand_as(p)
    if not m.any():
        return pred.sum() * 0
    return F.smooth_l1_loss(p[m], target[m], reduction="mean")


def masked_bce(pred: Tensor, mask: Tensor, ind: Tensor, target: Tensor) -> Tensor:
    p = gather(pred, ind).clamp(1e-4, 1 - 1e-4)
    m = mask.bool().unsqueeze(-1).expand_as(p)
    if not m.any():
        return pred.sum() * 0
    return F.binary_cross_entropy(p[m], target[m], reduction="mean")


def detection_losses(heads: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """The six official detection terms (unweighted)."""
    mask, ind = targets["mask"], targets["ind"]
    return {
        "hm": focal_loss(heads["hm"], targets["hm"]),
        "off": masked_smooth_l1(heads["reg"], mask, ind, targets["reg"]),
        "wh": masked_smooth_l1(heads["wh"], mask, ind, targets["wh"]),
        "h3d": masked_smooth_l1(heads["h3d"], mask, ind, targets["h3d"]),
        "y3d": masked_smooth_l1(heads["y3d"], mask, ind, targets["y3d"]),
        "cls_theta": masked_bce(heads["cls_theta"], mask, ind, targets["cls_theta"]),
    }
