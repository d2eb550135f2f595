"""COCO box and mask average precision through pycocotools' reference `COCOeval`.

AP is averaged over IoU thresholds 0.50:0.05:0.95 and 101 recall points, at most 100
detections per image; APs/APm/APl restrict to areas < 32^2, 32^2..96^2, > 96^2 pixels
(Lin et al., "Microsoft COCO", ECCV 2014, and https://cocodataset.org/#detection-eval).
pycocotools reports -1 for a size range without ground truth; we keep that convention.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detections_to_coco(
    image_id: int,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    category_ids: np.ndarray,
    masks: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One image's detections -> COCO result dicts ({image_id, category_id, bbox xywh, score} and,
    with `masks` (N, H, W), a compressed RLE `segmentation`)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    results = []
    for i, (box, score, cat) in enumerate(zip(boxes, np.asarray(scores).reshape(-1), np.asarray(category_ids).reshape(-1))):
        x0, y0, x1, y1 = box.tolist()
        res = {"image_id": int(image_id), "category_id": int(cat), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)}
        if masks is not None:
            from zoo.data.coco import mask_to_rle

            res["segmentation"] = mask_to_rle(np.asarray(masks[i]) > 0)
        results.append(res)
    return results


def coco_ap(
    predictions: Sequence[dict[str, Any]],
    ann_file_or_coco: str | Path | dict | Any,
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCO AP of `predictions` (COCO result dicts) against the ground truth.

    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
    as fractions in [0, 1] (-1 where a size range has no ground truth). `image_ids` restricts the
    evaluation (default: every image of the ground truth). No predictions score 0.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    from pycocotools.cocoeval import COCOeval

    from zoo.data.coco import load_coco

    gt = load_coco(ann_file_or_coco)
    preds = [dict(p) for p in predictions]
    if not preds:
        return {name: 0.0 for name in STAT_NAMES}
    if iou_type == "segm" and any("segmentation" not in p for p in preds):
        raise ValueError("segm evaluation needs a 'segmentation' in every prediction")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(preds)
        evaluator = COCOeval(gt, dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
