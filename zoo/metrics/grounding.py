"""Visual grounding metrics: Acc@0.5 for referring boxes, mIoU and oIoU for referring masks.

As used on RefCOCO/RefCOCO+/RefCOCOg (e.g. MAttNet, SeqTR, PolyFormer, PVD):
- Acc@0.5 (referring expression comprehension): the share of expressions whose predicted box has
  IoU >= 0.5 with the ground-truth box (one box per expression).
- mIoU (referring segmentation): the mean over expressions of each mask's IoU.
- oIoU (overall IoU): total intersection over total union, summed over all expressions (large
  objects weigh more). An expression whose prediction and truth are both empty has IoU 1 (mIoU) and
  adds nothing to oIoU.

Boxes are xyxy in pixels, pixel-edge coordinates (a box [0, 0, 2, 2] covers four pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def box_iou_pairs(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of each (pred_i, gt_i) pair of xyxy boxes (N, 4) -> (N,); inverted boxes count as empty."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if pred.shape != gt.shape:
        raise ValueError(f"boxes differ in number: {pred.shape[0]} predicted vs {gt.shape[0]} ground truth")

    def area(b: np.ndarray) -> np.ndarray:
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    lt = np.maximum(pred[:, :2], gt[:, :2])
    rb = np.minimum(pred[:, 2:], gt[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    union = area(pred) + area(gt) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def accuracy_at(pred_boxes: np.ndarray, gt_boxes: np.ndarray, threshold: float = 0.5) -> float:
    """Share of pairs with box IoU >= threshold (Acc@0.5 at the default)."""
    ious = box_iou_pairs(pred_boxes, gt_boxes)
    return float((ious >= threshold).mean()) if len(ious) else float("nan")


def mask_intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    return int((pred & gt).sum()), int((pred | gt).sum())


def mask_ious(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray]) -> dict[str, float]:
    """{"mIoU", "oIoU"} over pairs of (H, W) boolean masks (sizes may differ between pairs)."""
    if len(pred_masks) != len(gt_masks):
        raise ValueError(f"masks differ in number: {len(pred_masks)} vs {len(gt_masks)}")
    if not len(gt_masks):
        return {"mIoU": float("nan"), "oIoU": float("nan")}
    inters, unions = zip(*(mask_intersection_union(p, g) for p, g in zip(pred_masks, gt_masks)))
    per = [i / u if u else 1.0 for i, u in zip(inters, unions)]
    total = sum(unions)
    return {"mIoU": float(np.mean(per)), "oIoU": float(sum(inters) / total) if total else 1.0}


def grounding_metrics(pred_boxes: np.ndarray, gt_boxes: np.ndarray, pred_masks: Sequence[np.ndarray] | None = None,
                      gt_masks: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Acc@0.5 and mean box IoU, plus mIoU / oIoU when masks are given."""
    out = {"acc@0.5": accuracy_at(pred_boxes, gt_boxes, 0.5), "box_iou": float(box_iou_pairs(pred_boxes, gt_boxes).mean())}
    if pred_masks is not None and gt_masks is not None:
        out.update(mask_ious(pred_masks, gt_masks))
    return out
