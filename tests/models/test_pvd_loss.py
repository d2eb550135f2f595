"""PVD losses against hand-computed values: angle summation on a known square, ASL, diffusion and centre losses."""

import math

import pytest
import torch

from zoo.models.pvd.loss import (
    angle_descriptor,
    angle_sum,
    angle_summation_loss,
    centre_loss,
    diffusion_loss,
    sample_points,
    winding_angle_sum,
)

SQUARE = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])


def test_winding_sum_on_a_square_is_two_pi_inside_and_zero_outside():
    points = torch.tensor([[[0.5, 0.5], [0.1, 0.9], [2.0, 0.5], [-3.0, 4.0]]])
    got = winding_angle_sum(points, SQUARE)[0]
    assert got[0].abs().item() == pytest.approx(2 * math.pi, abs=1e-5)
    assert got[1].abs().item() == pytest.approx(2 * math.pi, abs=1e-5)
    assert got[2].item() == pytest.approx(0.0, abs=1e-5)
    assert got[3].item() == pytest.approx(0.0, abs=1e-5)
    # the centre sees each edge under a right angle: four times pi/2
    assert subtended(points[:, :1])[0, 0].abs().tolist() == pytest.approx([math.pi / 2] * 4, abs=1e-6)


def subtended(points):
    from zoo.models.pvd.loss import subtended_angles

    return subtended_angles(points, SQUARE)


def test_unsigned_angle_sum_by_hand():
    # inside: 2 pi; at (2, 0.5) the square subtends 2 atan(0.5 / 1) (near edge x = 1), swept twice
    points = torch.tensor([[[0.5, 0.5], [2.0, 0.5], [100.0, 100.0]]])
    got = angle_sum(points, SQUARE)[0]
    assert got[0].item() == pytest.approx(2 * math.pi, abs=1e-4)
    assert got[1].item() == pytest.approx(2 * 2 * math.atan(0.5), abs=1e-4)
    assert got[2].item() == pytest.approx(0.0, abs=3e-2)  # far away: about 0 (2 x 1.41 / 141)
    assert angle_descriptor(points, SQUARE)[0, 0].item() == pytest.approx(1.0, abs=1e-4)


def test_asl_zero_for_identical_polygons_and_hand_value_for_a_shifted_one():
    points = torch.tensor([[[0.5, 0.5], [2.0, 0.5]]])
    assert angle_summation_loss(SQUARE, SQUARE, points).item() == pytest.approx(0.0, abs=1e-5)
    shifted = SQUARE + torch.tensor([1.5, 0.0])  # now (2, 0.5) is inside and (0.5, 0.5) outside at distance 1
    want = 0.5 * ((1 - 2 * math.atan(0.5) / math.pi) * 2)  # both points differ by 1 - 2 atan(0.5) / pi
    assert angle_summation_loss(shifted, SQUARE, points).item() == pytest.approx(want, abs=1e-4)


def test_asl_gradient_pulls_a_too_small_polygon_outwards():
    gt = SQUARE * 2.0
    pred = (SQUARE * 1.0 + 0.5).clone().requires_grad_(True)  # [0.5, 1.5]^2 inside [0, 2]^2
    points = torch.tensor([[[0.2, 0.2], [1.8, 1.8], [0.2, 1.8], [1.8, 0.2]]])  # inside gt, outside pred
    angle_summation_loss(pred, gt, points).backward()
    grad = pred.grad[0]
    # gradient descent moves each corner towards its own corner of the truth (away from the centre)
    step = -grad
    outwards = pred.detach()[0] - 1.0
    assert ((step * outwards).sum(-1) > 0).all()


def test_sample_points_shapes_and_region():
    gen = torch.Generator().manual_seed(0)
    poly = SQUARE.repeat(2, 1, 1) * 0.2 + 0.4
    box = torch.tensor([[0.4, 0.4, 0.6, 0.6]] * 2)
    points = sample_points(poly, box, 32, gen)
    assert points.shape == (2, 32, 2)
    uniform = points[:, :16]
    assert (uniform >= 0.3 - 1e-6).all() and (uniform <= 0.7 + 1e-6).all()


def test_diffusion_and_centre_losses_by_hand():
    pred = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    target = torch.tensor([[[1.0, 1.0], [2.0, 1.0]]])
    assert diffusion_loss(pred, target).item() == pytest.approx((1 + 0 + 0 + 2) / 4)
    grid = 2
    logits = torch.tensor([[0.0, 0.0, 0.0, math.log(3.0)]])  # p = 1/6, 1/6, 1/6, 1/2
    gt = torch.tensor([[0.9, 0.8]])  # cell (1, 1) -> index 3
    centre = torch.tensor([[0.75, 0.25]])
    ce, l1 = centre_loss(logits, centre, gt, grid)
    assert ce.item() == pytest.approx(-math.log(0.5), abs=1e-6)
    assert l1.item() == pytest.approx((0.15 + 0.55) / 2, abs=1e-6)
