"""Box conversions, areas, IoU and generalized IoU (torch, differentiable, batch-friendly).

Conventions (as DETR / Deformable DETR / ViDT): `xyxy` is (x0, y0, x1, y1), `cxcywh` is
(centre x, centre y, width, height), `xywh` is COCO's (x0, y0, width, height). Every
function works on any leading batch shape `(..., 4)`; the pairwise functions take
`(N, 4)` and `(M, 4)` and return `(N, M)`.

Generalized IoU follows Rezatofighi et al., "Generalized Intersection over Union"
(CVPR 2019), Algorithm 1: GIoU = IoU - |C \\ (A u B)| / |C| with C the smallest box
enclosing A and B. Unlike the reference code we do not assert on box validity (that is
Python control flow on tensor values and breaks export); unions and enclosing areas are
clamped away from zero so degenerate boxes give finite values instead of NaN.

What is torchvision's and what is ours (tests/nn/test_box_ops.py compares each with
`torchvision.ops` on random and degenerate boxes):
- the four conversions call `torchvision.ops.box_convert` (same formulas, any leading shape);
- `box_area` is ours: it clamps inverted boxes to area 0, torchvision's returns negative areas;
- `box_iou` / `generalized_box_iou` are ours: they return DETR's `(iou, union)` pair and clamp
  unions and enclosing areas at 1e-7, where torchvision returns IoU alone and NaN (0/0) for two
  zero-area boxes; on boxes of positive area the values are torchvision's;
- the elementwise ones are ours (torchvision has no elementwise IoU; its
  `generalized_box_iou_loss` is 1 - our elementwise GIoU up to its +1e-7 in the denominators);
- `masks_to_boxes` is ours: pixel-edge coordinates (x1 = last column + 1) and zeros for empty
  masks, where torchvision's gives the last pixel's index (x1 = last column).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert

_EPS = 1e-7  # keeps IoU finite for zero-area boxes; far below any real box's area


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x0, y0, x1, y1) -> (cx, cy, w, h)."""
    return box_convert(boxes, "xyxy", "cxcywh")


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """COCO (x0, y0, w, h) -> (x0, y0, x1, y1)."""
    return box_convert(boxes, "xywh", "xyxy")


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(x0, y0, x1, y1) -> COCO (x0, y0, w, h)."""
    return box_convert(boxes, "xyxy", "xywh")


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes `(..., 4)` -> `(...)`; inverted boxes count as zero."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of xyxy boxes `(N, 4)` x `(M, 4)` -> (iou `(N, M)`, union `(N, M)`)."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union.clamp(min=_EPS), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU (Rezatofighi et al. 2019, Alg. 1) of xyxy boxes -> `(N, M)` in [-1, 1]."""
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=_EPS)


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU of matching pairs: xyxy `(..., 4)` and `(..., 4)` -> (iou `(...)`, union `(...)`)."""
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union.clamp(min=_EPS), union


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of matching pairs (the loss `1 - GIoU` of DETR-style detectors uses this) -> `(...)`."""
    iou, union = elementwise_box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[..., :2], boxes2[..., :2])
    rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=_EPS)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes `(N, 4)` around boolean/0-1 masks `(N, H, W)`, in pixel-edge coordinates
    (a mask covering pixel column j spans [j, j+1)); empty masks give all-zero boxes."""
    if masks.numel() == 0:
        return torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    m = masks > 0
    h, w = m.shape[-2:]
    ys = torch.arange(h, dtype=torch.float32, device=masks.device)
    xs = torch.arange(w, dtype=torch.float32, device=masks.device)
    rows, cols = m.any(dim=2), m.any(dim=1)  # (N, H), (N, W)
    big = float(max(h, w) + 1)
    x0 = torch.where(cols, xs, big).amin(dim=1)
    x1 = torch.where(cols, xs + 1, -1.0).amax(dim=1)
    y0 = torch.where(rows, ys, big).amin(dim=1)
    y1 = torch.where(rows, ys + 1, -1.0).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(m.flatten(1).any(dim=1)[:, None], boxes, torch.zeros_like(boxes))
