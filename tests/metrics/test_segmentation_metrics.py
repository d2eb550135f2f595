"""Panoptic quality and mean IoU on hand-computed cases."""

import math

import numpy as np
import pytest

from zoo.metrics.segmentation import ConfusionMatrix, PanopticQuality, mean_iou, panoptic_quality

CATS = {1: True, 2: True, 3: False}  # two thing classes, one stuff class


def _gt():
    pan = np.zeros((10, 10), np.int64)
    pan[:5] = 1  # stuff (sky), 50 px
    pan[5:, :5] = 2  # thing of class 1, 25 px
    pan[5:, 5:] = 3  # thing of class 1, 25 px
    segs = [{"id": 1, "category_id": 3}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 1}]
    return pan, segs


def test_perfect_prediction_is_one():
    pan, segs = _gt()
    out = panoptic_quality([(pan, segs)], [(pan, segs)], CATS)
    for group in ("All", "Things", "Stuff"):
        assert out[group]["pq"] == pytest.approx(1.0) and out[group]["sq"] == pytest.approx(1.0) and out[group]["rq"] == 1.0
    # ids are arbitrary: relabelled segments score the same
    out2 = panoptic_quality([(pan * 7, [dict(s, id=s["id"] * 7) for s in segs])], [(pan, segs)], CATS)
    assert out2["All"]["pq"] == pytest.approx(1.0)


def test_hand_computed_case():
    gt = _gt()
    pred = np.zeros((10, 10), np.int64)
    pred[:6] = 1  # sky: 60 px, 50 on gt sky -> IoU 50/60 (TP)
    pred[6:, :5] = 2  # class 1: 20 px inside gt segment 2 -> IoU 20/25 (TP); gt 3 unmatched (FN)
    pred[6:, 5:] = 3  # class 2 on gt segment 3: wrong class (FP for class 2)
    segs = [{"id": 1, "category_id": 3}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 2}]
    out = panoptic_quality([(pred, segs)], [gt], CATS)
    pc = out["per_class"]
    assert pc[1]["tp"] == 1 and pc[1]["fn"] == 1 and pc[1]["fp"] == 0
    assert pc[1]["pq"] == pytest.approx(0.8 / 1.5) and pc[1]["sq"] == pytest.approx(0.8) and pc[1]["rq"] == pytest.approx(2 / 3)
    assert pc[2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert pc[3]["pq"] == pytest.approx(50 / 60)
    assert out["Things"]["pq"] == pytest.approx((0.8 / 1.5) / 2)
    assert out["Stuff"]["pq"] == pytest.approx(50 / 60)
    assert out["All"]["pq"] == pytest.approx((0.8 / 1.5 + 50 / 60) / 3) and out["All"]["n"] == 3


def test_void_and_crowd_rules():
    gt = np.zeros((4, 10), np.int64)
    gt[:, :4] = 1  # class 1, 16 px
    gt[:, 4:6] = 0  # void
    gt[:, 6:] = 2  # crowd region of class 1
    gt_segs = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1, "iscrowd": 1}]
    pred = np.zeros((4, 10), np.int64)
    pred[:, :5] = 5  # 16 on gt + 4 on void: union leaves void out -> IoU 16/16
    pred[:, 5:8] = 6  # 4 on void + 8 on crowd -> ignored, not a false positive
    pred[:, 8:] = 7  # 8 px on crowd only -> ignored
    segs = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 1}, {"id": 7, "category_id": 1}]
    metric = PanopticQuality([{"id": 1, "isthing": 1}])
    metric.update(pred, segs, gt, gt_segs)
    out = metric.compute()
    assert out["per_class"][1]["tp"] == 1 and out["per_class"][1]["fp"] == 0 and out["per_class"][1]["fn"] == 0
    assert out["All"]["pq"] == pytest.approx(1.0)


def test_mean_iou_hand_values():
    gt = np.array([[0, 0], [1, 1], [255, 255]])
    pred = np.array([[0, 1], [1, 1], [2, 2]])  # last row ignored
    out = mean_iou(pred, gt, num_classes=3)
    assert out["iou"][0] == pytest.approx(0.5) and out["iou"][1] == pytest.approx(2 / 3) and math.isnan(out["iou"][2])
    assert out["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["pixel_accuracy"] == pytest.approx(0.75)
    cm = ConfusionMatrix(3)
    cm.update(gt[:2], gt[:2])
    assert cm.compute()["miou"] == 1.0
    with pytest.raises(ValueError):
        cm.update(np.array([5]), np.array([0]))
