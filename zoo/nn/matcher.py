"""Hungarian matching between set predictions and targets (DETR, Carion et al., ECCV 2020, Sec. 3.1).

One matcher for the three families:

- ViDT / Deformable DETR: sigmoid focal classification cost (`focal=True`, Deformable DETR
  `models/matcher.py`, ViDT `methods/matcher.py`), L1 box cost on normalised cxcywh boxes and
  -GIoU cost; weights class 2, L1 5, GIoU 2.
- OneFormer / Mask2Former (`mask2former/modeling/matcher.py`): softmax class cost
  (`focal=False`, -p(class)), a pairwise sigmoid BCE cost and a dice cost computed on
  `num_points` uniformly random points shared by predictions and targets; weights class 2,
  mask 5, dice 5, no box costs.

The total cost C = w_class C_class + w_bbox C_L1 + w_giou C_giou + w_mask C_mask + w_dice C_dice
is solved per image with `scipy.optimize.linear_sum_assignment` (Kuhn-Munkres), through
`assign`, which keeps a diverging batch (NaN or inf costs) from raising inside scipy: NaN costs
become 100 and an all-NaN matrix matches nothing, as OneFormer's matcher does
(`oneformer/modeling/matcher.py` `linear_sum_assignment_with_nan`; Mask2Former's own matcher
passes NaN to scipy, which raises). The official code leaves inf alone (scipy raises on -inf and
on a row of +inf); we also clip +-inf to +-1e8 so that any non-NaN matrix gets an assignment.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from zoo.nn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from zoo.nn.losses import point_sample

NAN_COST = 100.0  # OneFormer's replacement for NaN costs
INF_COST = 1e8  # our bound for +-inf costs (the official code has none)


def assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`linear_sum_assignment` on a `(Q, T)` cost that may hold NaN or inf, without raising.

    NaN entries cost `NAN_COST` (100, OneFormer's value) and a matrix of NaN only gives no
    match at all (two empty arrays), as OneFormer's `linear_sum_assignment_with_nan`; +-inf
    (not handled officially) cost +-`INF_COST`. Warns when it had to replace anything.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size and not np.isfinite(cost).all():
        nan = np.isnan(cost)
        if nan.all():
            warnings.warn("Hungarian matching: cost matrix is all NaN; no query matched", RuntimeWarning, stacklevel=2)
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy()
        warnings.warn("Hungarian matching: NaN/inf costs replaced by finite ones", RuntimeWarning, stacklevel=2)
        cost = np.nan_to_num(cost, nan=NAN_COST, posinf=INF_COST, neginf=-INF_COST)
    return linear_sum_assignment(cost)


def focal_class_cost(logits: Tensor, tgt_ids: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Deformable DETR's focal classification cost `(Q, T)`: FL(positive) - FL(negative) for each target class."""
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob**gamma * (-(1 - prob + 1e-8).log())
    pos = alpha * (1 - prob) ** gamma * (-(prob + 1e-8).log())
    return pos[:, tgt_ids] - neg[:, tgt_ids]


def batch_sigmoid_ce_cost(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise mean BCE `(Q, T)` between logits `(Q, P)` and 0/1 targets `(T, P)` on the same P points."""
    num_points = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / num_points


def batch_dice_cost(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise dice cost `(Q, T)`: 1 - (2|X n Y| + 1) / (|X| + |Y| + 1) with X = sigmoid(logits)."""
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of queries to targets, per image.

    `forward(outputs, targets)` takes `outputs` with `pred_logits` `(B, Q, C)` and, as the
    nonzero weights need them, `pred_boxes` `(B, Q, 4)` (normalised cxcywh) and
    `pred_masks` `(B, Q, h, w)` (logits); `targets` is a list of B dicts with `labels`
    `(T,)` int64 and `boxes` `(T, 4)` (normalised cxcywh) and/or `masks` `(T, H, W)`.
    Returns, per image, `(pred_idx, tgt_idx)` int64 tensors of length min(Q, T), sorted by
    `pred_idx`; an image without targets gives two empty tensors.

    With `focal=True` the class cost is Deformable DETR's focal cost on sigmoid scores
    (C classes, no "no-object" logit); with `focal=False` it is -softmax(logits)[target],
    where the last of the C logits is Mask2Former's "no object".
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal: bool = True,
        alpha: float = 0.25,
        gamma: float = 2.0,
        cost_mask: float = 0.0,
        cost_dice: float = 0.0,
        num_points: int = 12544,
    ):
        super().__init__()
        if not any((cost_class, cost_bbox, cost_giou, cost_mask, cost_dice)):
            raise ValueError("all matching costs are zero")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.cost_mask, self.cost_dice = cost_mask, cost_dice
        self.focal, self.alpha, self.gamma = focal, alpha, gamma
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(self, outputs: dict[str, Tensor], target: dict[str, Tensor], b: int,
                    generator: torch.Generator | None = None) -> Tensor:
        """The `(Q, T)` weighted cost matrix of image `b` (float32)."""
        logits = outputs["pred_logits"][b].float()
        tgt_ids = target["labels"].long()
        cost = logits.new_zeros((logits.shape[0], tgt_ids.shape[0]))
        if self.cost_class:
            if self.focal:
                c_class = focal_class_cost(logits, tgt_ids, self.alpha, self.gamma)
            else:
                c_class = -logits.softmax(-1)[:, tgt_ids]
            cost = cost + self.cost_class * c_class
        if self.cost_bbox or self.cost_giou:
            out_bbox = outputs["pred_boxes"][b].float()
            tgt_bbox = target["boxes"].float().to(out_bbox.device)
            if self.cost_bbox:
                cost = cost + self.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
            if self.cost_giou:
                giou = generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
                cost = cost - self.cost_giou * giou
        if self.cost_mask or self.cost_dice:
            out_mask = outputs["pred_masks"][b].float()[:, None]
            tgt_mask = target["masks"].float().to(out_mask.device)[:, None]
            # One set of uniform random points for every prediction and target of this image.
            coords = torch.rand(1, self.num_points, 2, generator=generator, device=out_mask.device)
            out_pts = point_sample(out_mask, coords.expand(out_mask.shape[0], -1, -1), align_corners=False)[:, 0]
            tgt_pts = point_sample(tgt_mask, coords.expand(tgt_mask.shape[0], -1, -1), align_corners=False)[:, 0]
            if self.cost_mask:
                cost = cost + self.cost_mask * batch_sigmoid_ce_cost(out_pts, tgt_pts)
            if self.cost_dice:
                cost = cost + self.cost_dice * batch_dice_cost(out_pts, tgt_pts)
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], generator: torch.Generator | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Per-image optimal (pred_idx, tgt_idx); see the class docstring for the inputs."""
        indices = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(outputs, target, b, generator).cpu().numpy()
            rows, cols = assign(cost)
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def matched_permutation(indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Flatten matcher output into (batch_idx, pred_idx) for indexing `(B, Q, ...)` predictions (DETR's
    `_get_src_permutation_idx`)."""
    if not indices:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx
