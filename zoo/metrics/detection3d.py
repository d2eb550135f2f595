"""Monocular 3D detection metrics: rotated-box IoU in BEV and 3D, AP at KITTI's 40 recall points,
and BEV segmentation IoU.

Boxes are (N, 7) [x, y, z, l, w, h, ry] in KITTI camera coordinates: (x, y, z) the bottom centre
(y points down, so the box spans y - h .. y), l along the heading, ry about the y axis.
- BEV IoU: the footprints' exact intersection (convex polygon clipping, Sutherland-Hodgman)
  over their union, in the x-z plane.
- 3D IoU: BEV intersection x vertical overlap over the union of volumes (KITTI's `d3_box_overlap`).
- AP (KITTI devkit, Simonelli et al. 2019's R40): detections of one class sorted by score,
  greedily matched per frame to the unmatched ground truth of highest IoU >= threshold;
  AP = mean over recall r in {1/40, ..., 1} of the best precision at recall >= r.
  KITTI's difficulty filters (height, occlusion, truncation) are not applied: every ground-truth
  box counts (our procedural scenes have no don't-care regions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def footprints(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) -> (N, 4, 2) BEV corners (x, z), counter-clockwise in the x-z plane."""
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    x, z, l, w, ry = b[:, 0:1], b[:, 2:3], b[:, 3:4], b[:, 4:5], b[:, 6:7]  # noqa: E741
    lx = np.concatenate([l, -l, -l, l], 1) / 2
    wz = np.concatenate([w, w, -w, -w], 1) / 2
    c, s = np.cos(ry), np.sin(ry)
    return np.stack([c * lx + s * wz + x, -s * lx + c * wz + z], -1)


def polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _orient(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0], poly[:, 1]
    signed = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    return poly if signed >= 0 else poly[::-1]


def convex_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection polygon of two convex polygons (Sutherland-Hodgman clipping of a by b)."""
    out = _orient(np.asarray(a, np.float64))
    clip = _orient(np.asarray(b, np.float64))
    for i in range(len(clip)):
        if len(out) == 0:
            break
        p, q = clip[i], clip[(i + 1) % len(clip)]
        edge = q - p
        side = edge[0] * (out[:, 1] - p[1]) - edge[1] * (out[:, 0] - p[0])  # >= 0: inside (left of edge)
        new = []
        for j in range(len(out)):
            cur, nxt = out[j], out[(j + 1) % len(out)]
            sc, sn = side[j], side[(j + 1) % len(out)]
            if sc >= 0:
                new.append(cur)
            if (sc >= 0) != (sn >= 0):
                t = sc / (sc - sn)
                new.append(cur + t * (nxt - cur))
        out = np.array(new) if new else np.zeros((0, 2))
    return out


def bev_intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa, fb = footprints(a), footprints(b)
    out = np.zeros((len(fa), len(fb)))
    for i, pa in enumerate(fa):
        ca, ra = pa.mean(0), np.linalg.norm(pa - pa.mean(0), axis=1).max()
        for j, pb in enumerate(fb):
            cb, rb = pb.mean(0), np.linalg.norm(pb - pb.mean(0), axis=1).max()
            if np.linalg.norm(ca - cb) > ra + rb:
                continue
            out[i, j] = polygon_area(convex_intersection(pa, pb))
    return out


def bev_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 7), (M, 7) -> (N, M) rotated IoU of the footprints."""
    a, b = np.asarray(a, np.float64).reshape(-1, 7), np.asarray(b, np.float64).reshape(-1, 7)
    inter = bev_intersection_matrix(a, b)
    area_a, area_b = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def iou3d_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 7), (M, 7) -> (N, M) 3D IoU (BEV intersection x height overlap / union volume)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 7), np.asarray(b, np.float64).reshape(-1, 7)
    inter = bev_intersection_matrix(a, b)
    top = np.maximum((a[:, 1] - a[:, 5])[:, None], (b[:, 1] - b[:, 5])[None])
    bottom = np.minimum(a[:, 1][:, None], b[:, 1][None])
    inter = inter * np.clip(bottom - top, 0, None)
    vol_a, vol_b = a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5]
    return inter / np.maximum(vol_a[:, None] + vol_b[None] - inter, 1e-12)


def average_precision(preds: Sequence[tuple[np.ndarray, np.ndarray]], gts: Sequence[np.ndarray], iou_threshold: float,
                      mode: str = "3d", recall_points: int = 40) -> float:
    """preds[f] = (boxes (N, 7), scores (N,)), gts[f] = (M, 7) boxes of one class in frame f.
    Returns AP in [0, 1] at `recall_points` equally spaced recalls (KITTI R40); nan without ground truth."""
    iou_fn = iou3d_matrix if mode == "3d" else bev_iou_matrix
    n_gt = sum(len(g) for g in gts)
    if n_gt == 0:
        return float("nan")
    records = []  # (score, is_tp)
    for (boxes, scores), gt in zip(preds, gts):
        boxes, scores = np.asarray(boxes).reshape(-1, 7), np.asarray(scores).reshape(-1)
        order = np.argsort(-scores)
        ious = iou_fn(boxes[order], gt) if len(gt) and len(boxes) else np.zeros((len(boxes), len(gt)))
        taken = np.zeros(len(gt), bool)
        for k, i in enumerate(order):
            tp = False
            if len(gt):
                cand = np.where(~taken, ious[k], -1.0)
                j = int(cand.argmax())
                if cand[j] >= iou_threshold:
                    taken[j] = True
                    tp = True
            records.append((float(scores[i]), tp))
    if not records:
        return 0.0
    records.sort(key=lambda r: -r[0])
    hits = np.cumsum([r[1] for r in records])
    precision = hits / np.arange(1, len(records) + 1)
    recall = hits / n_gt
    ap = 0.0
    for r in np.linspace(1.0 / recall_points, 1.0, recall_points):
        above = precision[recall >= r - 1e-9]
        ap += above.max() if len(above) else 0.0
    return ap / recall_points


def evaluate_detection(preds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], gts: Sequence[tuple[np.ndarray, np.ndarray]],
                       class_names: Sequence[str], thresholds: Sequence[float] = (0.5, 0.25)) -> dict[str, float]:
    """preds[f] = (boxes, scores, labels), gts[f] = (boxes, labels) -> {"AP3D@0.5/Car": ..., "APBEV@0.25/Large": ...}."""
    out: dict[str, float] = {}
    for c, name in enumerate(class_names):
        p = [(b[lab == c], s[lab == c]) for b, s, lab in preds]
        g = [b[lab == c] for b, lab in gts]
        for t in thresholds:
            out[f"AP3D@{t}/{name}"] = average_precision(p, g, t, "3d")
            out[f"APBEV@{t}/{name}"] = average_precision(p, g, t, "bev")
    return out


def bev_segmentation_iou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """preds[f], gts[f]: (C, H, W) booleans (or gts as a class map, 0 background / c + 1) -> IoU per class
    accumulated over all frames (nan for a class absent from both)."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for p, g in zip(preds, gts):
        p = np.asarray(p).astype(bool)
        g = np.asarray(g)
        if g.ndim == 2:
            g = np.stack([g == c + 1 for c in range(num_classes)])
        g = g.astype(bool)
        inter += (p & g).reshape(num_classes, -1).sum(1)
        union += (p | g).reshape(num_classes, -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
