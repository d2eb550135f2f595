"""Grounding metrics against hand-computed values: Acc@0.5, mIoU, oIoU."""

import numpy as np
import pytest

from zoo.metrics.grounding import accuracy_at, box_iou_pairs, grounding_metrics, mask_ious


def test_box_iou_and_accuracy_by_hand():
    pred = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 4, 4]], float)
    gt = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [0, 0, 2, 2], [0, 0, 1, 1]], float)
    np.testing.assert_allclose(box_iou_pairs(pred, gt), [1.0, 2 / 6, 0.25, 0.0])
    assert accuracy_at(pred, gt) == 0.25
    assert accuracy_at(pred, gt, 0.3) == 0.5
    with pytest.raises(ValueError, match="number"):
        box_iou_pairs(pred[:2], gt)


def test_miou_and_oiou_by_hand():
    small_gt = np.zeros((4, 4), bool)
    small_gt[0, 0] = True
    small_pred = np.zeros((4, 4), bool)  # IoU 0 on a 1-pixel object
    big_gt = np.ones((4, 4), bool)
    big_pred = np.ones((4, 4), bool)
    big_pred[0] = False  # IoU 12 / 16
    out = mask_ious([small_pred, big_pred], [small_gt, big_gt])
    assert out["mIoU"] == pytest.approx((0 + 0.75) / 2)
    assert out["oIoU"] == pytest.approx((0 + 12) / (1 + 16))  # large objects weigh more
    empty = np.zeros((2, 2), bool)
    assert mask_ious([empty], [empty]) == {"mIoU": 1.0, "oIoU": 1.0}
    both = grounding_metrics(np.array([[0, 0, 2, 2]]), np.array([[0, 0, 2, 2]]), [big_pred], [big_gt])
    assert both["acc@0.5"] == 1.0 and both["mIoU"] == pytest.approx(0.75)
