"""SeaBird losses against hand-computed values; targets encode and decode back to the boxes."""

from __future__ import annotations

import math

import numpy as np
import torch

from zoo.data.kitti import KittiObject
from zoo.models.seabird.loss import dice_loss, focal_loss, l1_seg_loss, masked_smooth_l1
from zoo.models.seabird.model import HEAD_CHANNELS, preset_config
from zoo.models.seabird.pipeline import decode
from zoo.models.seabird.train import bba_vectors, encode_targets


def test_dice_loss_by_hand():
    p = torch.tensor([[[[0.5, 1.0]], [[0.0, 0.25]]]])  # (1, 2, 1, 2)
    y = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])
    # class 0: (2 * 1.5 + 1) / (1.5 + 2 + 1) = 4 / 4.5; class 1: (2 * 0.25 + 1) / (0.25 + 1 + 1) = 1.5 / 2.25
    want = 1 - (4 / 4.5 + 1.5 / 2.25) / 2
    assert math.isclose(float(dice_loss(p, y)), want, rel_tol=1e-6)
    assert math.isclose(float(l1_seg_loss(p, y)), (0.5 + 0 + 0 + 0.75) / 4, rel_tol=1e-6)
    assert float(dice_loss(y, y)) < 1e-6


def test_focal_loss_by_hand():
    pred = torch.tensor([[[[0.8, 0.3]]]])
    gt = torch.tensor([[[[1.0, 0.5]]]])
    pos = math.log(0.8) * 0.2**2
    neg = math.log(0.7) * 0.3**2 * 0.5**4
    assert math.isclose(float(focal_loss(pred, gt)), -(pos + neg), rel_tol=1e-5)


def test_masked_smooth_l1_ignores_padding():
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 1, 0] = torch.tensor([0.5, 3.0])
    target = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    loss = masked_smooth_l1(pred, torch.tensor([[1.0, 0.0]]), torch.tensor([[2, 0]]), target)
    assert math.isclose(float(loss), (0.5 * 0.5**2 + 2.5) / 2, rel_tol=1e-6)


def test_bba_vectors_axis_aligned_and_rotated():
    tt, rr, ew, eh, rot = bba_vectors(4.0, 2.0, 0.0)
    assert np.allclose(np.abs(tt), [0, 1]) and np.allclose(np.abs(rr), [2, 0]) and (ew, eh, rot) == (4.0, 2.0, 0.0)
    tt, rr, ew, eh, rot = bba_vectors(4.0, 2.0, math.pi / 4)
    assert rot == 1.0 and math.isclose(ew, eh) and tt[1] < 0 and rr[0] > 0


def test_targets_decode_back_to_the_boxes():
    config = preset_config("micro")
    objs = [KittiObject("Car", 0, 0, 0, (0, 0, 1, 1), (1.5, 1.8, 4.2), (-3.3, 1.55, 12.4), 0.5),
            KittiObject("Bus", 0, 0, 0, (0, 0, 1, 1), (3.2, 2.5, 11.0), (5.1, 1.55, 22.7), -0.2)]
    t = encode_targets(objs, config)
    rows, cols = t["hm"].shape[1:]
    heads = torch.zeros(sum(HEAD_CHANNELS.values()), rows, cols)
    heads[0:2] = t["hm"]
    for k in range(2):
        r, c = divmod(int(t["ind"][k]), cols)
        heads[2:12, r, c] = t["wh"][k]
        heads[12:14, r, c] = t["reg"][k]
        heads[14, r, c] = 1.0  # use the vectors
        heads[15, r, c] = t["h3d"][k, 0]
        heads[16, r, c] = t["y3d"][k, 0]
    boxes, scores, labels = decode(torch.zeros(2, rows, cols), heads, config, score_threshold=0.99)
    order = np.argsort(labels)
    assert labels[order].tolist() == [0, 1] and np.allclose(scores, 1)
    want = np.array([[5.1, 1.55, 22.7, 11.0, 2.5, 3.2, -0.2], [-3.3, 1.55, 12.4, 4.2, 1.8, 1.5, 0.5]])
    assert np.allclose(boxes[order], want, atol=1e-3)
