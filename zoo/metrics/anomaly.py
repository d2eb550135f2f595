"""Anomaly-detection metrics: image AUROC, pixel AUROC and AU-PRO.

* AUROC is computed from ranks (the Mann-Whitney U statistic): the probability that a
  random anomalous sample scores above a random normal one, ties counting one half. It is
  exactly the area under the ROC curve that sklearn's `roc_auc_score` and torchmetrics'
  `binary_auroc` integrate, without their threshold bookkeeping.
* AU-PRO follows Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021,
  Sec. 5.2 (and their evaluation code, as used by EfficientAD, Batzner et al., WACV 2024,
  Sec. 4): every connected component of every ground-truth mask is one region (8-connected,
  `scipy.ndimage.label` with a 3x3 structure); at a threshold the per-region overlap (PRO)
  is the mean over all regions of the fraction of the region above the threshold, and the
  false-positive rate is over all anomaly-free pixels of all images. The PRO-over-FPR curve
  is integrated with the trapezoidal rule up to `fpr_limit` (interpolating at the limit)
  and divided by `fpr_limit`, so a perfect map scores 1.

Inputs may be numpy arrays or torch tensors (any device, with or without grad).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

KINDS = ("structural", "logical")


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} anomalous and {n_neg} normal")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    ranks = rankdata(scores)  # ties get their average rank, which counts them as one half
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def image_auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of image scores against labels (non-zero = anomalous)."""
    s = _np(scores).reshape(-1)
    y = _np(labels).reshape(-1) != 0
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    return _auroc(s, y)


def _maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) float maps and bool masks; a channel axis of size 1 is dropped."""
    m = _np(maps)
    g = _np(masks, np.float32) > 0.5  # bool, {0, 1} and {0, 255} masks alike
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if g.ndim == 4 and g.shape[1] == 1:
        g = g[:, 0]
    if m.ndim == 2:
        m, g = m[None], (g[None] if g.ndim == 2 else g)
    if m.shape != g.shape or m.ndim != 3:
        raise ValueError(f"maps {m.shape} and masks {g.shape} must both be (N, H, W) or (N, 1, H, W) of one shape")
    return m, g


def pixel_auroc(maps: Any, masks: Any) -> float:
    """AUROC over all pixels of all images: anomaly maps against ground-truth masks."""
    m, g = _maps_and_masks(maps, masks)
    return _auroc(m.reshape(-1), g.reshape(-1))


def pro_curve(
    maps: Any, masks: Any, *, num_thresholds: int | None = None, fpr_limit: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-region-overlap curve: (fprs, pros, thresholds), fprs non-decreasing.

    A pixel is predicted anomalous when its score is >= the threshold. With
    `num_thresholds=None` the curve has a point at every distinct score (exact, as the
    official evaluation). Otherwise the thresholds are quantiles of the anomaly-free
    pixels' scores placed so that the FPR axis is sampled evenly on [0, fpr_limit] (plus
    one level past the limit to interpolate at it, and FPR = 1); at each level both ends of
    the curve's vertical rise are kept, so only the spans between levels are approximated.
    The first point is (0, 0) at threshold +inf.
    """
    m, g = _maps_and_masks(maps, masks)
    structure = np.ones((3, 3), dtype=int)  # 8-connectivity, as the MVTec evaluation code
    weights = np.zeros(m.shape, dtype=np.float64)
    n_regions = 0
    for i in range(m.shape[0]):
        labeled, n = ndimage.label(g[i], structure=structure)
        if n:
            sizes = np.bincount(labeled.reshape(-1))
            per_pixel = np.where(labeled > 0, 1.0 / sizes[labeled], 0.0)
            weights[i] = per_pixel
            n_regions += n
    normal = m[~g]
    if n_regions == 0:
        raise ValueError("AU-PRO needs at least one anomalous region in the masks")
    if normal.size == 0:
        raise ValueError("AU-PRO needs anomaly-free pixels")
    if not (np.all(np.isfinite(m))):
        raise ValueError("maps contain NaN or infinity")
    anomalous = m[g]
    anomalous_weights = weights[g] / n_regions
    normal_sorted = np.sort(normal)
    order = np.argsort(anomalous, kind="stable")
    anomalous_sorted = anomalous[order]
    # Suffix sums: total weight of anomalous pixels at or above each sorted position.
    suffix = np.concatenate([np.cumsum(anomalous_weights[order][::-1])[::-1], [0.0]])

    if num_thresholds is None:
        thresholds = np.unique(m)[::-1]
    else:
        if num_thresholds < 2:
            raise ValueError(f"num_thresholds must be >= 2 or None, got {num_thresholds}")
        step = fpr_limit / (num_thresholds - 1)
        levels = np.concatenate([np.linspace(0.0, fpr_limit, num_thresholds)[1:], [min(fpr_limit + step, 1.0)]])
        # The k-th largest normal score as an inclusive threshold gives FPR >= k / n_normal.
        ranks = np.clip(np.ceil(levels * normal.size).astype(np.int64), 1, normal.size)
        bottoms = normal_sorted[normal.size - ranks]
        # Between two neighbouring normal scores the curve rises at constant FPR; a threshold
        # just above the next lower normal score gives the top of that rise, so each sampled
        # FPR level is exact at both ends and only the spans between levels are interpolated.
        below = np.searchsorted(normal_sorted, bottoms, side="left") - 1
        tops = np.where(below >= 0, np.nextafter(normal_sorted[np.maximum(below, 0)], np.inf), -np.inf)
        first_top = np.nextafter(normal_sorted[-1], np.inf)
        thresholds = np.unique(np.concatenate([bottoms, tops, [first_top, m.min()]]))[::-1]
    fprs = (normal.size - np.searchsorted(normal_sorted, thresholds, side="left")) / normal.size
    pros = suffix[np.searchsorted(anomalous_sorted, thresholds, side="left")]
    fprs = np.concatenate([[0.0], fprs])
    pros = np.concatenate([[0.0], np.minimum(pros, 1.0)])
    thresholds = np.concatenate([[np.inf], thresholds])
    return fprs, pros, thresholds


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) on [0, limit], x non-decreasing, y interpolated at the limit."""
    last = int(np.searchsorted(x, limit, side="right")) - 1  # last point with x <= limit
    area = float(np.sum(0.5 * (y[1 : last + 1] + y[:last]) * np.diff(x[: last + 1])))
    if last + 1 < len(x) and x[last] < limit:
        x0, x1, y0, y1 = x[last], x[last + 1], y[last], y[last + 1]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_limit) * (limit - x0)
    return area


def au_pro(maps: Any, masks: Any, fpr_limit: float = 0.3, num_thresholds: int | None = 200) -> float:
    """Area under the PRO curve for FPR in [0, fpr_limit], divided by fpr_limit (1 is perfect).

    `num_thresholds=None` integrates the exact curve; the default 200 thresholds, spread
    evenly over the FPR axis up to the limit, agree with it to about 1e-3.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fprs, pros, _ = pro_curve(maps, masks, num_thresholds=num_thresholds, fpr_limit=fpr_limit)
    return _area_to(fprs, pros, fpr_limit) / fpr_limit


def _or_nan(fn: Any, *args: Any) -> float:
    try:
        return fn(*args)
    except ValueError as err:
        if "needs" in str(err):  # a metric undefined on this data (one class only)
            return math.nan
        raise


def evaluate_anomaly(
    scores: Any,
    maps: Any,
    labels: Any,
    masks: Any,
    defect_types: Sequence[str] | None = None,
    defect_kinds: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Image AUROC, pixel AUROC and AU-PRO (FPR limit 0.3) of one test set.

    With `defect_types` (one a sample, "good" for normal) and `defect_kinds` ({defect:
    "structural" | "logical"}) naming both kinds, also `image_auroc_structural`,
    `image_auroc_logical` (and the pixel metrics per kind), each that kind's anomalies
    against all good images, as in MVTec LOCO AD. `maps`
    and `masks` may be None for image-level results only. A metric that the data cannot
    define (e.g. no anomalous pixels) is NaN.
    """
    y = _np(labels).reshape(-1) != 0
    s = _np(scores).reshape(-1)
    result: dict[str, float] = {"image_auroc": _or_nan(image_auroc, s, y)}
    if maps is not None and masks is not None:
        m, g = _maps_and_masks(maps, masks)
        if m.shape[0] != s.size:
            raise ValueError(f"{m.shape[0]} maps but {s.size} scores")
        result["pixel_auroc"] = _or_nan(pixel_auroc, m, g)
        result["au_pro"] = _or_nan(au_pro, m, g)
    if defect_types is not None and defect_kinds is not None:
        types = list(defect_types)
        if len(types) != s.size:
            raise ValueError(f"{len(types)} defect types but {s.size} scores")
        unknown = sorted({t for t, a in zip(types, y) if a and t not in defect_kinds})
        if unknown:
            raise ValueError(f"defect types without a kind in defect_kinds: {unknown}")
        present = {defect_kinds[t] for t, a in zip(types, y) if a}
        for kind in KINDS if len(present) > 1 else ():  # one kind alone would repeat the totals
            keep = np.array([not a or defect_kinds[t] == kind for t, a in zip(types, y)])
            if np.any(keep & y):
                result[f"image_auroc_{kind}"] = _or_nan(image_auroc, s[keep], y[keep])
                if maps is not None and masks is not None:
                    result[f"pixel_auroc_{kind}"] = _or_nan(pixel_auroc, m[keep], g[keep])
                    result[f"au_pro_{kind}"] = _or_nan(au_pro, m[keep], g[keep])
    return result
