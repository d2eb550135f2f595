"""Hungarian matcher: hand costs, brute-force optimality, permutation recovery, empty targets."""

import itertools
import math

import numpy as np
import pytest
import torch

from zoo.nn.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from zoo.nn.losses import dice_loss, sigmoid_ce_loss
from zoo.nn.matcher import (
    HungarianMatcher,
    assign,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
    focal_class_cost,
    matched_permutation,
)


def test_focal_class_cost_hand_value():
    cost = focal_class_cost(torch.zeros(1, 3), torch.tensor([2]))
    # p = 0.5: 0.25 * 0.25 * log2 - 0.75 * 0.25 * log2 = -0.125 log 2
    assert math.isclose(cost.item(), -0.125 * math.log(2), rel_tol=1e-5)
    # a higher logit for the class gives a lower cost
    assert focal_class_cost(torch.tensor([[0.0, 3.0]]), torch.tensor([1])) < focal_class_cost(torch.tensor([[0.0, -3.0]]), torch.tensor([1]))


def test_box_cost_matrix_hand_weights():
    outputs = {"pred_logits": torch.zeros(1, 2, 3), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.3, 0.1, 0.2]]])}
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]])}
    cost = HungarianMatcher().cost_matrix(outputs, target, 0)
    l1 = torch.tensor([[0.2], [0.3 + 0.2 + 0.1 + 0.2]])
    giou = generalized_box_iou(box_cxcywh_to_xyxy(outputs["pred_boxes"][0]), box_cxcywh_to_xyxy(target["boxes"]))
    expected = 2 * (-0.125 * math.log(2)) + 5 * l1 - 2 * giou
    assert torch.allclose(cost, expected, atol=1e-5)


def test_matches_brute_force_optimum():
    g = torch.Generator().manual_seed(1)
    outputs = {"pred_logits": torch.randn(2, 5, 4, generator=g), "pred_boxes": torch.rand(2, 5, 4, generator=g) * 0.5 + 0.25}
    targets = [{"labels": torch.randint(0, 4, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.25} for n in (3, 5)]
    for focal in (True, False):
        matcher = HungarianMatcher(focal=focal)
        indices = matcher(outputs, targets)
        for b, (src, tgt) in enumerate(indices):
            cost = matcher.cost_matrix(outputs, targets[b], b)
            best = min(sum(cost[p, t].item() for t, p in enumerate(perm)) for perm in itertools.permutations(range(5), cost.shape[1]))
            assert len(src) == cost.shape[1]
            assert math.isclose(cost[src, tgt].sum().item(), best, rel_tol=1e-5, abs_tol=1e-5)


def test_recovers_a_permutation_and_handles_empty_images():
    perm = torch.tensor([2, 0, 3, 1])
    boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.3, 0.2, 0.2], [0.4, 0.8, 0.3, 0.1], [0.5, 0.5, 0.4, 0.4]])
    labels = torch.tensor([0, 1, 2, 1])
    logits = torch.full((4, 3), -5.0)
    logits[perm, labels] = 5.0
    outputs = {"pred_logits": torch.stack([logits, logits]), "pred_boxes": torch.stack([torch.zeros(4, 4), torch.zeros(4, 4)])}
    outputs["pred_boxes"][0, perm] = boxes
    outputs["pred_boxes"][1] = 0.5
    targets = [{"labels": labels, "boxes": boxes}, {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    (src, tgt), (src2, tgt2) = HungarianMatcher()(outputs, targets)
    assert torch.equal(src[tgt.argsort()], perm)
    assert src2.numel() == 0 and tgt2.numel() == 0 and src2.dtype == torch.int64
    batch_idx, pred_idx = matched_permutation([(src, tgt), (src2, tgt2)])
    assert torch.equal(batch_idx, torch.zeros(4, dtype=torch.long)) and torch.equal(pred_idx, src)


def test_mask_costs_match_the_losses_pairwise():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, generator=g)
    targets = (torch.rand(2, 20, generator=g) > 0.5).float()
    ce = batch_sigmoid_ce_cost(logits, targets)
    dice = batch_dice_cost(logits, targets)
    for q in range(3):
        for t in range(2):
            assert torch.allclose(ce[q, t], sigmoid_ce_loss(logits[q : q + 1], targets[t : t + 1], 1), atol=1e-6)
            assert torch.allclose(dice[q, t], dice_loss(logits[q : q + 1], targets[t : t + 1], 1), atol=1e-6)


def test_mask_matcher_recovers_permutation():
    masks = torch.zeros(3, 32, 32)
    masks[0, :16, :16] = 1
    masks[1, 10:30, 5:20] = 1
    masks[2, :, 24:] = 1
    perm = torch.tensor([4, 1, 2])  # 5 queries, 3 targets
    pred = torch.full((5, 16, 16), -8.0)
    down = torch.nn.functional.interpolate(masks[:, None], size=(16, 16), mode="area")[:, 0]
    pred[perm] = 16 * (down - 0.5)
    labels = torch.tensor([0, 1, 1])
    outputs = {"pred_logits": torch.zeros(1, 5, 3), "pred_masks": pred[None]}
    matcher = HungarianMatcher(cost_class=2, cost_bbox=0, cost_giou=0, focal=False, cost_mask=5, cost_dice=5, num_points=500)
    ((src, tgt),) = matcher(outputs, [{"labels": labels, "masks": masks}], generator=torch.Generator().manual_seed(0))
    assert torch.equal(src[tgt.argsort()], perm)


def test_nan_and_inf_costs_are_assigned_as_oneformer_does():
    # NaN costs 100 (OneFormer's linear_sum_assignment_with_nan): the NaN pair is avoided
    cost = np.array([[np.nan, 1.0], [2.0, 3.0]])
    with pytest.warns(RuntimeWarning):
        rows, cols = assign(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    # ... but taken over a pair costing more than 100
    with pytest.warns(RuntimeWarning):
        assert assign(np.array([[np.nan, 150.0], [0.0, 0.0]]))[1].tolist() == [0, 1]
    # all NaN: no match at all, as the official
    with pytest.warns(RuntimeWarning):
        rows, cols = assign(np.full((3, 2), np.nan))
    assert rows.size == cols.size == 0
    # a row of +inf and a -inf entry (scipy alone raises "infeasible" / "invalid numeric entries")
    with pytest.warns(RuntimeWarning):
        rows, cols = assign(np.array([[np.inf, np.inf], [2.0, 3.0], [-np.inf, 0.0]]))
    assert len(rows) == 2 and rows.tolist() == [1, 2] and cols.tolist() == [1, 0]
    # finite costs are untouched (no warning)
    rows, cols = assign(np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert cols.tolist() == [0, 1]


def test_matcher_survives_a_diverging_batch():
    outputs = {"pred_logits": torch.tensor([[[float("nan"), 0.0], [0.0, 5.0]]]),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [float("inf"), 0.5, 0.2, 0.2]]])}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    with pytest.warns(RuntimeWarning):
        (rows, cols), = HungarianMatcher()(outputs, targets)
    assert len(rows) == len(cols) == 1
    masks = {"pred_logits": torch.full((1, 2, 3), float("nan")), "pred_masks": torch.full((1, 2, 4, 4), float("nan"))}
    mtargets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8)}]
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=0.0, cost_giou=0.0, focal=False, cost_mask=5.0,
                               cost_dice=5.0, num_points=16)
    with pytest.warns(RuntimeWarning):
        (rows, cols), = matcher(masks, mtargets)
    assert len(rows) == len(cols) == 0
