"""Segmentation metrics: panoptic quality (PQ, SQ, RQ) and mean IoU.

Panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019, Sec. 4.1, Eq. 1-2):
predicted and ground-truth segments of one category match when their IoU > 0.5 (which makes
the matching unique); then

    PQ = sum_{TP} IoU / (|TP| + |FP|/2 + |FN|/2) = SQ * RQ,
    SQ = sum_{TP} IoU / |TP|,  RQ = |TP| / (|TP| + |FP|/2 + |FN|/2),

per category, averaged over the categories that occur (in ground truth or prediction), for
all, things and stuff. As the reference `panopticapi.evaluation.pq_compute`: void pixels
(id 0) and crowd regions are not counted; the union in IoU leaves out a prediction's void
pixels; a prediction lying more than half on void or on a crowd region of its category is
not a false positive.

Mean IoU: per-class intersection over union from an accumulated confusion matrix, averaged
over the classes present in ground truth or prediction (classes absent from both are NaN and
skipped), ignoring `ignore_index` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

VOID = 0
_OFFSET = 256 * 256 * 256  # segment ids are < 256^3 (PNG RGB encoding)


class PanopticQuality:
    """Accumulates PQ statistics over images; `categories` maps category_id -> isthing (bool)."""

    def __init__(self, categories: dict[int, bool] | Sequence[dict[str, Any]]):
        if not isinstance(categories, dict):
            categories = {int(c["id"]): bool(c.get("isthing", 1)) for c in categories}
        self.isthing = {int(k): bool(v) for k, v in categories.items()}
        self.tp = {c: 0 for c in self.isthing}
        self.fp = {c: 0 for c in self.isthing}
        self.fn = {c: 0 for c in self.isthing}
        self.iou = {c: 0.0 for c in self.isthing}

    def update(self, pred_pan: np.ndarray, pred_segments: Sequence[dict[str, Any]],
               gt_pan: np.ndarray, gt_segments: Sequence[dict[str, Any]]) -> None:
        """One image: id maps (H, W) and their segments_info ({id, category_id, iscrowd?})."""
        pred_pan = np.asarray(pred_pan, dtype=np.int64)
        gt_pan = np.asarray(gt_pan, dtype=np.int64)
        if pred_pan.shape != gt_pan.shape:
            raise ValueError(f"prediction {pred_pan.shape} and ground truth {gt_pan.shape} differ in size")
        gt_segs = {int(s["id"]): s for s in gt_segments}
        pred_segs = {int(s["id"]): s for s in pred_segments}
        for s in pred_segs.values():
            if int(s["category_id"]) not in self.isthing:
                raise ValueError(f"unknown predicted category {s['category_id']}")
        gt_area = dict(zip(*np.unique(gt_pan, return_counts=True)))
        pred_area = dict(zip(*np.unique(pred_pan, return_counts=True)))
        joint, counts = np.unique(gt_pan * _OFFSET + pred_pan, return_counts=True)
        overlap = {(int(j // _OFFSET), int(j % _OFFSET)): int(c) for j, c in zip(joint, counts)}

        gt_matched, pred_matched = set(), set()
        for (g, p), inter in overlap.items():
            if g not in gt_segs or p not in pred_segs:
                continue
            if gt_segs[g].get("iscrowd", 0) or int(gt_segs[g]["category_id"]) != int(pred_segs[p]["category_id"]):
                continue
            union = pred_area.get(p, 0) + gt_area.get(g, 0) - inter - overlap.get((VOID, p), 0)
            iou = inter / union
            if iou > 0.5:
                cat = int(gt_segs[g]["category_id"])
                self.tp[cat] += 1
                self.iou[cat] += iou
                gt_matched.add(g)
                pred_matched.add(p)

        crowd_by_cat = {}
        for g, s in gt_segs.items():
            if s.get("iscrowd", 0):
                crowd_by_cat[int(s["category_id"])] = g
            elif g not in gt_matched:
                self.fn[int(s["category_id"])] += 1
        for p, s in pred_segs.items():
            if p in pred_matched:
                continue
            cat = int(s["category_id"])
            ignored = overlap.get((VOID, p), 0)
            if cat in crowd_by_cat:
                ignored += overlap.get((crowd_by_cat[cat], p), 0)
            if pred_area.get(p, 0) and ignored / pred_area[p] > 0.5:
                continue
            self.fp[cat] += 1

    def compute(self) -> dict[str, Any]:
        """{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {cat: {"pq", "sq", "rq", "tp", "fp", "fn"}}}."""
        per_class = {}
        for c in self.isthing:
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            if tp + fp + fn == 0:
                continue
            denom = tp + 0.5 * fp + 0.5 * fn
            per_class[c] = {"pq": self.iou[c] / denom, "sq": self.iou[c] / tp if tp else 0.0, "rq": tp / denom,
                            "tp": tp, "fp": fp, "fn": fn}
        out: dict[str, Any] = {"per_class": per_class}
        for name, keep in (("All", lambda c: True), ("Things", lambda c: self.isthing[c]), ("Stuff", lambda c: not self.isthing[c])):
            cats = [c for c in per_class if keep(c)]
            n = len(cats)
            out[name] = {k: (sum(per_class[c][k] for c in cats) / n if n else 0.0) for k in ("pq", "sq", "rq")}
            out[name]["n"] = n
        return out


def panoptic_quality(preds: Sequence[tuple[np.ndarray, Sequence[dict]]], gts: Sequence[tuple[np.ndarray, Sequence[dict]]],
                     categories: dict[int, bool] | Sequence[dict[str, Any]]) -> dict[str, Any]:
    """PQ over a dataset: lists of (id map, segments_info) pairs for predictions and ground truth."""
    metric = PanopticQuality(categories)
    for (pp, ps), (gp, gs) in zip(preds, gts, strict=True):
        metric.update(pp, ps, gp, gs)
    return metric.compute()


class ConfusionMatrix:
    """Accumulated (num_classes x num_classes) pixel confusion: rows ground truth, columns prediction."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = np.asarray(pred, dtype=np.int64).reshape(-1)
        gt = np.asarray(gt, dtype=np.int64).reshape(-1)
        keep = (gt != self.ignore_index) & (gt >= 0) & (gt < self.num_classes)
        pred, gt = pred[keep], gt[keep]
        if ((pred < 0) | (pred >= self.num_classes)).any():
            raise ValueError("predicted class out of range")
        self.matrix += np.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def compute(self) -> dict[str, Any]:
        """{"miou", "iou" (per class, NaN if absent), "pixel_accuracy"}."""
        inter = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, np.nan)
        total = self.matrix.sum()
        return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0, "iou": iou.tolist(),
                "pixel_accuracy": float(inter.sum() / total) if total else 0.0}


def mean_iou(preds: Sequence[np.ndarray] | np.ndarray, gts: Sequence[np.ndarray] | np.ndarray, num_classes: int,
             ignore_index: int = 255) -> dict[str, Any]:
    """Mean IoU over a set of (H, W) label maps (or one map each)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    if isinstance(preds, np.ndarray) and preds.ndim == 2:
        preds, gts = [preds], [gts]
    for p, g in zip(preds, gts, strict=True):
        cm.update(p, g)
    return cm.compute()
