"""Anomaly metrics against hand-computed values and reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.metrics.anomaly import au_pro, evaluate_anomaly, image_auroc, pixel_auroc, pro_curve


def test_image_auroc_hand_cases() -> None:
    labels = [0, 0, 1, 1]
    assert image_auroc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert image_auroc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert image_auroc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    # Pairs (anomalous, normal): (0.35, 0.1) right, (0.35, 0.4) wrong, 0.8 above both: 3/4.
    assert image_auroc([0.1, 0.4, 0.35, 0.8], labels) == pytest.approx(0.75)
    # With a tie: (0.5, 0.5) counts one half, the other three pairs are right: 3.5/4.
    assert image_auroc([0.5, 0.2, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert image_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor(labels)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        image_auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError):
        image_auroc([0.1, 0.2, 0.3], [0, 1])


def test_auroc_matches_reference_implementations() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels * 0.7, 1)  # rounding makes many ties
    ours = image_auroc(scores, labels)
    from torchmetrics.functional.classification import binary_auroc

    assert ours == pytest.approx(float(binary_auroc(torch.tensor(scores), torch.tensor(labels))), abs=1e-6)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert ours == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_pixel_auroc() -> None:
    masks = np.array([[[0, 1], [0, 0]], [[0, 0], [1, 0]]])
    maps = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.4, 0.0], [0.5, 0.6]]])
    # Anomalous 0.9 beats all six normals, 0.5 beats 0.1, 0.2, 0.3, 0.4, 0.0: 11 of 12 pairs.
    assert pixel_auroc(maps, masks) == pytest.approx(11 / 12)
    assert pixel_auroc(torch.tensor(maps)[:, None], torch.tensor(masks)[:, None] * 255) == pytest.approx(11 / 12)
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(maps, masks[:, :1])


def test_au_pro_perfect_and_reversed() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[1, 2:6, 3:9] = True
    masks[2, 10:12, 10:15] = True
    assert au_pro(masks.astype(float), masks) == pytest.approx(1.0)
    assert au_pro(masks + 0.01 * rng.random(masks.shape), masks, num_thresholds=None) == pytest.approx(1.0)
    assert au_pro(1.0 - masks, masks) == pytest.approx(0.0)


def test_au_pro_hand_case() -> None:
    # Image 0: normal pixels 0.1, 0.4; one region of two pixels scored 0.3 and 0.9.
    # Image 1: all normal, 0.2, 0.5, 0.05, 0.0. Six normal pixels in all.
    maps = np.array([[[0.1, 0.4, 0.3, 0.9]], [[0.2, 0.5, 0.05, 0.0]]])
    masks = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])
    # Curve (FPR, PRO): (0, 0) -> (0, 1/2) at 0.9 -> (1/6, 1/2) at 0.5 -> (2/6, 1/2) at 0.4
    # -> (2/6, 1) at 0.3 -> ... -> (1, 1). Up to 0.3 the PRO is 1/2: area 0.15, / 0.3 = 0.5.
    # Up to 0.5: 1/2 * 1/3 + 1 * (0.5 - 1/3) = 1/3, / 0.5 = 2/3.
    for n in (None, 200, 3):
        assert au_pro(maps, masks, fpr_limit=0.3, num_thresholds=n) == pytest.approx(0.5)
        assert au_pro(maps, masks, fpr_limit=0.5, num_thresholds=n) == pytest.approx(2 / 3)
    fprs, pros, thresholds = pro_curve(maps, masks)
    assert fprs[0] == 0.0 and pros[0] == 0.0 and thresholds[0] == np.inf
    np.testing.assert_allclose(fprs, [0, 0, 1 / 6, 2 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    np.testing.assert_allclose(pros, [0, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1])


def test_au_pro_averages_regions_not_pixels() -> None:
    # Regions {0} and {3, 4, 5}; the single-pixel one is found first. Per region overlap
    # 1/2 at FPR 0 (pixel TPR would be 1/4). Curve: (0, 1/2), (1/3, 1/2), (1/3, 1), (1, 1):
    # area 1/2 * 1/3 + 1 * 2/3 = 5/6.
    maps = np.array([[[0.9, 0.5, 0.1, 0.2, 0.2, 0.2, 0.0]]])
    masks = np.array([[[1, 0, 0, 1, 1, 1, 0]]])
    assert au_pro(maps, masks, fpr_limit=1.0, num_thresholds=None) == pytest.approx(5 / 6)
    assert au_pro(maps, masks, fpr_limit=1.0) == pytest.approx(5 / 6)


def test_au_pro_regions_are_eight_connected() -> None:
    # Mask pixels (0,0), (1,1), (1,2): one region with 8-connectivity (two with 4). Only (0,0)
    # scores high, so the PRO is 1/3 until every normal pixel is in: AU-PRO(limit 1) = 1/3.
    # With 4-connected regions it would be 1/2.
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.where(masks, 0.0, 0.5)
    maps[0, 0, 0] = 0.9
    assert au_pro(maps, masks, fpr_limit=1.0, num_thresholds=None) == pytest.approx(1 / 3)


def test_au_pro_thresholded_matches_exact() -> None:
    rng = np.random.default_rng(2)
    masks = np.zeros((6, 48, 48), dtype=bool)
    masks[1, 5:20, 5:15] = True
    masks[2, 30:34, 10:40] = True
    masks[2, 40:44, 40:44] = True
    masks[4, 20:30, 20:30] = True
    maps = rng.random(masks.shape) + masks * rng.random(masks.shape) * 0.7
    exact = au_pro(maps, masks, num_thresholds=None)
    assert 0.2 < exact < 0.9
    assert au_pro(maps, masks) == pytest.approx(exact, abs=2e-3)
    assert au_pro(torch.tensor(maps, dtype=torch.float32), torch.tensor(masks)) == pytest.approx(exact, abs=2e-3)
    fprs, pros, _ = pro_curve(maps, masks, num_thresholds=50, fpr_limit=0.3)
    assert np.all(np.diff(fprs) >= 0) and np.all(np.diff(pros) >= -1e-12) and fprs[-1] == 1.0 and pros[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="anomalous region"):
        au_pro(maps, np.zeros_like(masks))


def test_evaluate_anomaly_by_kind() -> None:
    types = ["good", "good", "good", "scratch", "scratch", "missing_part", "missing_part"]
    kinds = {"scratch": "structural", "missing_part": "logical"}
    labels = [0 if t == "good" else 1 for t in types]
    # Structural anomalies score above every good image; one logical one below two goods.
    scores = [0.1, 0.3, 0.5, 0.8, 0.9, 0.4, 0.7]
    masks = np.zeros((7, 8, 8), dtype=bool)
    for i in range(3, 7):
        masks[i, 2:5, 2:5] = True
    maps = masks * 1.0 + 0.05 * np.arange(7)[:, None, None]
    result = evaluate_anomaly(torch.tensor(scores), torch.tensor(maps), torch.tensor(labels), masks, types, kinds)
    assert result["image_auroc_structural"] == 1.0
    assert result["image_auroc_logical"] == pytest.approx(5 / 6)  # 0.4 beats 0.1 and 0.3, 0.7 all three
    assert result["image_auroc"] == pytest.approx(image_auroc(scores, labels))
    assert result["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks))
    assert result["au_pro"] == pytest.approx(au_pro(maps, masks))
    assert all(isinstance(v, float) for v in result.values())

    only_image = evaluate_anomaly(scores, None, labels, None)
    assert set(only_image) == {"image_auroc"}
    all_good = evaluate_anomaly([0.1, 0.2], np.zeros((2, 4, 4)), [0, 0], np.zeros((2, 4, 4)))
    assert all(math.isnan(v) for v in all_good.values())
    with pytest.raises(ValueError, match="without a kind"):
        evaluate_anomaly(scores, None, labels, None, types, {"scratch": "structural"})
