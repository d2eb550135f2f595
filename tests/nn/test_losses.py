"""Focal, dice, point BCE losses and point sampling against hand-computed values."""

import math

import pytest
import torch

from zoo.nn.losses import (
    calculate_uncertainty,
    dice_loss,
    get_uncertain_point_coords_with_randomness,
    point_mask_losses,
    point_sample,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)

LOG2 = math.log(2.0)


def test_focal_loss_hand_values():
    # logit 0 -> p = 0.5: positive 0.25 * 0.5^2 * log 2, negative 0.75 * 0.5^2 * log 2
    inputs = torch.zeros(1, 1, 2)
    targets = torch.tensor([[[1.0, 0.0]]])
    assert math.isclose(sigmoid_focal_loss(inputs, targets, num_boxes=1).item(), 0.25 * LOG2, rel_tol=1e-6)
    assert math.isclose(sigmoid_focal_loss(inputs, targets, num_boxes=2).item(), 0.125 * LOG2, rel_tol=1e-6)
    # gamma 0 and alpha -1 is plain BCE summed
    assert math.isclose(sigmoid_focal_loss(inputs, targets, 1, alpha=-1, gamma=0).item(), 2 * LOG2, rel_tol=1e-6)
    # a confident correct prediction is down-weighted far more than BCE: logit 3 for a positive
    p = torch.sigmoid(torch.tensor(3.0)).item()
    expected = 0.25 * (1 - p) ** 2 * -math.log(p)
    got = sigmoid_focal_loss(torch.full((1, 1, 1), 3.0), torch.ones(1, 1, 1), 1).item()
    assert math.isclose(got, expected, rel_tol=1e-5)


def test_focal_loss_matches_deformable_detr_normalisation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g)
    onehot = torch.zeros(2, 5, 3)
    onehot[0, 1, 2] = onehot[1, 3, 0] = 1
    prob = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = prob * onehot + (1 - prob) * (1 - onehot)
    per = (0.25 * onehot + 0.75 * (1 - onehot)) * ce * (1 - p_t) ** 2
    reference = per.mean(1).sum() / 2 * logits.shape[1]  # Deformable DETR: mean(1).sum()/num_boxes * Q
    assert torch.allclose(sigmoid_focal_loss(logits, onehot, 2), reference)


def test_focal_loss_mean_dim_is_the_detr_function_without_times_q():
    # mean_dim=1 is DETR's `loss.mean(1).sum() / num_boxes` as ViDT+ token labeling calls it:
    # logits 0 on (1, 4 tokens, 1 class) all positive -> per element 0.25 * 0.25 * log 2, mean over
    # the 4 tokens, / num_boxes 2; the default (sum) is 4 times that.
    inputs, targets = torch.zeros(1, 4, 1), torch.ones(1, 4, 1)
    one = 0.25 * 0.25 * LOG2
    assert math.isclose(sigmoid_focal_loss(inputs, targets, 2, mean_dim=1).item(), one / 2, rel_tol=1e-6)
    assert math.isclose(sigmoid_focal_loss(inputs, targets, 2).item(), 4 * one / 2, rel_tol=1e-6)


def test_dice_and_bce_hand_values():
    logits = torch.tensor([[30.0, 30.0, -30.0, -30.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # 1 - (2*1 + 1) / (2 + 1 + 1) = 0.25
    assert math.isclose(dice_loss(logits, target, 1).item(), 0.25, rel_tol=1e-6)
    assert math.isclose(dice_loss(logits, logits.gt(0).float(), 1).item(), 0.0, abs_tol=1e-6)
    assert math.isclose(sigmoid_ce_loss(torch.zeros(3, 4), torch.ones(3, 4), 3).item(), LOG2, rel_tol=1e-6)


def test_point_sample_bilinear_hand_values():
    image = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    pts = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.5, 0.25]]])
    out = point_sample(image, pts)
    assert out.shape == (1, 1, 5)
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 1.0, 1.5, 2.0, 0.5]))
    grid = point_sample(image, pts[:, None])  # (N, Hg, Wg, 2) form
    assert grid.shape == (1, 1, 1, 5)


def test_uncertain_points_concentrate_on_the_boundary():
    # logits = 20 (x - 0.5): uncertainty -|logit| peaks on the vertical line x = 0.5
    logits = (torch.linspace(-10, 10, 64)[None, None, None, :]).expand(2, 1, 32, 64).contiguous()
    g = torch.Generator().manual_seed(0)
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 400, 3, 0.75, generator=g)
    assert coords.shape == (2, 400, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    important, rest = coords[:, :300], coords[:, 300:]
    # the 300 best of 1200 uniform draws lie within about 1/8 of the line (a few sit on the zero-padded
    # top/bottom border, where bilinear sampling also pulls logits towards 0); the random rest do not
    assert torch.quantile((important[..., 0] - 0.5).abs(), 0.95) < 0.13
    assert (rest[..., 0] - 0.5).abs().max() > 0.3
    again = get_uncertain_point_coords_with_randomness(logits, num_points=400, generator=torch.Generator().manual_seed(0))
    assert torch.equal(coords, again)
    with pytest.raises(ValueError):
        get_uncertain_point_coords_with_randomness(logits, num_points=10, oversample_ratio=0.5)


def test_point_mask_losses_perfect_and_falling():
    target = torch.zeros(2, 16, 16)
    target[0, 4:12, 4:12] = 1
    target[1, :, 8:] = 1
    g = torch.Generator().manual_seed(0)
    # grid_sample pads with zeros, so use an empty target: border samples stay exact for it
    empty_target = torch.zeros(1, 16, 16)
    bce, dice = point_mask_losses(torch.full((1, 4, 4), -30.0), empty_target, 1, num_points=64, generator=g)
    assert bce.item() < 1e-3 and dice.item() < 1e-3
    bce, dice = point_mask_losses(torch.full((1, 4, 4), 30.0), empty_target, 1, num_points=64, generator=g)
    assert bce.item() > 5 and dice.item() > 0.9
    logits = torch.zeros(2, 8, 8, requires_grad=True)  # predictions at a lower resolution than targets
    opt = torch.optim.Adam([logits], lr=0.2)
    first = None
    for _ in range(30):
        bce, dice = point_mask_losses(logits, target, 2, num_points=256, generator=g)
        loss = bce + dice
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    empty = point_mask_losses(torch.zeros(0, 4, 4), torch.zeros(0, 8, 8), 1)
    assert empty[0].item() == 0.0 and empty[1].item() == 0.0


def test_focal_loss_elementwise_is_torchvisions_and_only_the_reduction_is_ours():
    """Issue #19: the per-element loss comes from torchvision.ops.sigmoid_focal_loss; the
    normalisations differ by design. torchvision reduces by "sum" or "mean" over all elements;
    Deformable DETR / ViDT divide the sum by num_boxes (the matched boxes across the batch), and
    ViDT+'s token labeling first averages over the tokens (mean_dim=1), then divides by num_boxes."""
    from torchvision.ops import sigmoid_focal_loss as tv_focal

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=g) * 4
    logits[0, 0, 0], logits[0, 0, 1] = 30.0, -30.0  # saturated logits stay finite in both
    targets = (torch.rand(3, 7, 5, generator=g) > 0.7).float()
    for alpha, gamma in ((0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.25, 1.5)):
        tv_sum = tv_focal(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")
        assert torch.allclose(sigmoid_focal_loss(logits, targets, 4.0, alpha, gamma), tv_sum / 4.0, rtol=1e-6)
        tv_none = tv_focal(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
        ours_tokens = sigmoid_focal_loss(logits, targets, 4.0, alpha, gamma, mean_dim=1)
        assert torch.allclose(ours_tokens, tv_none.mean(1).sum() / 4.0, rtol=1e-6)
        # torchvision's "mean" is our sum over num_boxes only when num_boxes = number of elements
        assert torch.allclose(sigmoid_focal_loss(logits, targets, float(logits.numel()), alpha, gamma),
                              tv_focal(logits, targets, alpha=alpha, gamma=gamma, reduction="mean"), rtol=1e-6)
    x = logits.clone().requires_grad_()
    sigmoid_focal_loss(x, targets, 2.0).backward()
    x_tv = logits.clone().requires_grad_()
    (tv_focal(x_tv, targets, reduction="sum") / 2.0).backward()
    assert torch.allclose(x.grad, x_tv.grad, rtol=1e-6)
