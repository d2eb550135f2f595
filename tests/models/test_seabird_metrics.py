"""Rotated-box IoU (BEV, 3D) of boxes whose overlap is known by hand, AP at 40 recall points, BEV IoU."""

from __future__ import annotations

import math

import numpy as np

from zoo.metrics.detection3d import average_precision, bev_iou_matrix, bev_segmentation_iou, iou3d_matrix


def _box(x=0.0, z=10.0, l=4.0, w=2.0, h=1.5, ry=0.0, y=1.5):  # noqa: E741
    return np.array([[x, y, z, l, w, h, ry]])


def test_bev_iou_shifted_and_rotated():
    assert math.isclose(bev_iou_matrix(_box(), _box())[0, 0], 1.0)
    assert math.isclose(bev_iou_matrix(_box(), _box(x=2.0))[0, 0], 4 / 12)  # half overlap along length: 4 / (8 + 8 - 4)
    # a 2 x 2 square and the same square turned 45 degrees: intersection is the regular octagon 8 (sqrt 2 - 1)
    octagon = 8 * (math.sqrt(2) - 1)
    got = bev_iou_matrix(_box(l=2, w=2), _box(l=2, w=2, ry=math.pi / 4))[0, 0]
    assert math.isclose(got, octagon / (8 - octagon), rel_tol=1e-9)
    # a 4 x 2 box and its copy turned 90 degrees about the same centre: a 2 x 2 overlap
    assert math.isclose(bev_iou_matrix(_box(), _box(ry=math.pi / 2))[0, 0], 4 / 12)
    assert bev_iou_matrix(_box(), _box(x=10.0))[0, 0] == 0.0


def test_iou3d_uses_the_height_overlap():
    # same footprint, heights 1.5 and 3 on the same ground (y = 1.5): 6 / (12 + 24 - ... ) -> vol 12 vs 24, inter 12
    assert math.isclose(iou3d_matrix(_box(), _box(h=3.0))[0, 0], 12 / 24)
    # lifted by 1 m: vertical overlap 0.5 of 1.5
    assert math.isclose(iou3d_matrix(_box(), _box(y=0.5))[0, 0], 4 / (12 + 12 - 4))


def test_ap_r40_by_hand():
    gt = [_box(), _box(x=20.0)]
    perfect = [(np.concatenate([_box(), _box(x=5.0)]), np.array([0.9, 0.1])), (_box(x=20.0), np.array([0.8]))]
    assert math.isclose(average_precision(perfect, gt, 0.5, "bev"), 1.0)
    # the false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1
    worse = [(np.concatenate([_box(), _box(x=5.0)]), np.array([0.7, 0.95])), (_box(x=20.0), np.array([0.8]))]
    assert math.isclose(average_precision(worse, gt, 0.5, "bev"), (20 * (2 / 3) + 20 * (2 / 3)) / 40)
    assert average_precision([(np.zeros((0, 7)), np.zeros(0))], [_box()], 0.5) == 0.0


def test_bev_segmentation_iou_per_class():
    pred = np.zeros((2, 4, 4), bool)
    pred[0, :2] = True
    gt = np.zeros((4, 4), np.uint8)
    gt[1:3] = 1
    iou = bev_segmentation_iou([pred], [gt], 2)
    assert math.isclose(iou[0], 4 / 12) and np.isnan(iou[1])
