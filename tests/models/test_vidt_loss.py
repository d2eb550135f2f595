"""ViDT / ViDT+ criterion against hand-computed values (outputs built by hand in the contract's shapes)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from zoo.models.vidt.loss import ViDTCriterion, token_label_targets, token_levels
from zoo.nn.losses import dice_loss

VIDT = SimpleNamespace(num_classes=2)
PLUS = SimpleNamespace(num_classes=2, uqr=True, iou_aware=True, token_label=True, vector_dim=256, mask_size=128)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _focal(logit: float, positive: bool, alpha: float = 0.25) -> float:
    p = _sig(logit)
    if positive:
        return -alpha * (1 - p) ** 2 * math.log(p)
    return -(1 - alpha) * p**2 * math.log(1 - p)


def test_single_query_single_target_by_hand():
    # one query, two classes, target label 1; pred box (0.5, 0.5, 0.4, 0.4) = xyxy (0.3, 0.3, 0.7, 0.7),
    # target (0.6, 0.5, 0.4, 0.2) = xyxy (0.4, 0.4, 0.8, 0.6): intersection 0.3 x 0.2 = 0.06, union 0.16 + 0.08 - 0.06
    # = 0.18, IoU 1/3, enclosing 0.5 x 0.4 = 0.2, GIoU = 1/3 - 0.02 / 0.2
    outputs = {"pred_logits": torch.tensor([[[0.3, -0.8]]]), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.4, 0.4]]])}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.6, 0.5, 0.4, 0.2]])}]
    losses = ViDTCriterion(VIDT)(outputs, targets)
    ce = _focal(0.3, False) + _focal(-0.8, True)
    l1 = 0.1 + 0.0 + 0.0 + 0.2
    giou = 1 - (1 / 3 - 0.02 / 0.2)
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(l1, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(giou, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(2 * ce + 5 * l1 + 2 * giou, rel=1e-5)
    # class_error = 100 - top-1 accuracy: argmax of (0.3, -0.8) is class 0, the target is 1
    assert losses["class_error"].item() == pytest.approx(100.0)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss", "class_error"}


def test_class_error_and_iouaware_vector_by_hand():
    logits = torch.tensor([[[-1.0, 2.0]]])
    outputs = {"pred_logits": logits, "pred_boxes": torch.tensor([[[0.5, 0.5, 0.4, 0.4]]]),
               "pred_ious": torch.tensor([[[0.7]]]), "pred_vectors": torch.zeros(1, 1, 256)}
    # the target fills the whole 128 x 128 frame: its crop (ROIAlign samples at pixel centres) is all ones
    masks = torch.ones(1, 128, 128, dtype=torch.bool)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]]), "masks": masks}]
    crit = ViDTCriterion(SimpleNamespace(num_classes=2, uqr=True, iou_aware=True, token_label=False))
    losses = crit(outputs, targets)
    assert losses["class_error"].item() == pytest.approx(0.0)  # argmax 1 == label 1
    # IoU of pred xyxy (0.3, 0.3, 0.7, 0.7) with the whole frame: 0.16
    iou, z = 0.16, 0.7
    bce = -(iou * math.log(_sig(z)) + (1 - iou) * math.log(1 - _sig(z)))
    assert losses["loss_iouaware"].item() == pytest.approx(bce, rel=1e-5)
    # all-ones crop: DCT vector (128, 0, ..., 0); zero prediction ->
    # 3.0 (vector_loss_coef) x mean |0 - v| = 3 x 128 / 256
    assert losses["loss_vector"].item() == pytest.approx(1.5, rel=1e-4)
    expected = 2 * losses["loss_ce"] + 5 * losses["loss_bbox"] + 2 * losses["loss_giou"] + 2 * bce + 1.5
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_perfect_prediction_gives_near_zero_losses():
    q, c = 5, 3
    boxes = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])
    pred_boxes = torch.full((1, q, 4), 0.5)
    pred_boxes[0, 1], pred_boxes[0, 3] = boxes[0], boxes[1]
    logits = torch.full((1, q, c), -12.0)
    logits[0, 1, 2] = 12.0
    logits[0, 3, 0] = 12.0
    outputs = {"pred_logits": logits, "pred_boxes": pred_boxes}
    targets = [{"labels": torch.tensor([2, 0]), "boxes": boxes}]
    losses = ViDTCriterion(SimpleNamespace(num_classes=c))(outputs, targets)
    assert losses["loss_bbox"].item() < 1e-6
    assert losses["loss_giou"].item() < 1e-5
    assert losses["loss_ce"].item() < 1e-6
    assert losses["class_error"].item() == 0.0


def test_aux_terms_named_and_weighted_like_the_official_weight_dict():
    torch.manual_seed(0)

    def pred() -> dict:
        return {"pred_logits": torch.randn(2, 6, 2), "pred_boxes": torch.rand(2, 6, 4) * 0.5 + 0.25}

    outputs = pred()
    outputs["aux_outputs"] = [pred() for _ in range(3)]
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])},
               {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    crit = ViDTCriterion(VIDT)
    losses = crit(outputs, targets)
    names = {f"{k}_{i}" for k in ("loss_ce", "loss_bbox", "loss_giou") for i in range(3)}
    assert names <= set(losses)
    assert "loss_ce_3" not in losses
    total = sum({"ce": 2, "bbox": 5, "giou": 2}[k.split("_")[1]] * v for k, v in losses.items()
                if k.startswith("loss_"))
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    # each aux term is the same criterion on that prediction alone (its own matching)
    alone = crit(outputs["aux_outputs"][1], targets)
    assert losses["loss_giou_1"].item() == pytest.approx(alone["loss_giou"].item(), rel=1e-6)
    # normalised by the 2 target boxes of the batch (the empty image adds none)
    assert crit.weight("loss_bbox_2") == 5.0


def test_token_label_targets_by_hand():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # label 2, top-left
    masks[1, 1:3, 1:3] = True  # label 1, overlaps at (1, 1): the first instance keeps it
    t = token_label_targets([{"labels": torch.tensor([2, 1]), "masks": masks}], num_channels=3)
    assert t.shape == (1, 3, 4, 4)
    fg = masks[0] | masks[1]
    assert torch.equal(t[0, 0], fg.float())  # channel 0: any object
    assert torch.equal(t[0, 2], masks[0].float())
    second = masks[1] & ~masks[0]
    assert torch.equal(t[0, 1], second.float())
    assert t[0, 1, 1, 1] == 0 and t[0, 2, 1, 1] == 1


def test_token_loss_levels_focal_plus_dice():
    torch.manual_seed(0)
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2:6, 0:4] = True
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.25, 0.5, 0.5, 0.5]]), "masks": masks}]
    lv0, lv1 = torch.randn(1, 4, 4, 2), torch.randn(1, 2, 2, 2)
    crit = ViDTCriterion(SimpleNamespace(num_classes=2, token_label=True))
    focal, dice = crit.loss_tokens({"pred_logits": [lv0, lv1]}, targets, num_boxes=1.0)
    full = token_label_targets(targets, 2)
    exp_f = exp_d = 0.0
    for lv in (lv0, lv1):
        h = lv.shape[1]
        soft = torch.nn.functional.avg_pool2d(full, 8 // h).permute(0, 2, 3, 1).flatten(1, 2)
        # the official vidt-plus formula: focal per element, .mean(1).sum() / num_boxes (no x h*w)
        x = lv.flatten(1, 2)
        p = x.sigmoid()
        ce = torch.nn.functional.binary_cross_entropy_with_logits(x, soft, reduction="none")
        p_t = p * soft + (1 - p) * (1 - soft)
        per = (0.25 * soft + 0.75 * (1 - soft)) * ce * (1 - p_t) ** 2
        exp_f += (per.mean(1).sum() / 1.0).item()
        exp_d += dice_loss(x, soft, 1.0).item()
    assert focal.item() == pytest.approx(exp_f, rel=1e-5)
    assert dice.item() == pytest.approx(exp_d, rel=1e-5)
    # the flat (B, N, C) + spatial_shapes layout reads the same levels
    flat = torch.cat([lv0.flatten(1, 2), lv1.flatten(1, 2)], dim=1)
    levels = token_levels({"pred_logits": flat, "spatial_shapes": torch.tensor([[4, 4], [2, 2]])})
    assert torch.equal(levels[0], lv0) and torch.equal(levels[1], lv1)


def test_token_focal_is_averaged_over_tokens_by_hand():
    # One image, one 2x2 level, one class channel (channel 0 = "any object"); the object covers the
    # whole 4x4 image, so every token's soft target is 1. Logits 0 everywhere: each element's focal
    # term is 0.25 * 0.5^2 * log 2. Official: mean over the 4 tokens, sum over 1 image x 1 class,
    # / num_boxes 2 -> 0.25 * 0.25 * log 2 / 2 (a token sum would be 4 times that).
    masks = torch.ones(1, 4, 4, dtype=torch.bool)
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]]), "masks": masks}]
    crit = ViDTCriterion(SimpleNamespace(num_classes=1, token_label=True))
    focal, dice = crit.loss_tokens({"pred_logits": [torch.zeros(1, 2, 2, 1)]}, targets, num_boxes=2.0)
    assert focal.item() == pytest.approx(0.25 * 0.25 * math.log(2) / 2, rel=1e-6)
    # dice over the image's 4 tokens: 1 - (2 * 2 + 1) / (2 + 4 + 1), / num_boxes 2
    assert dice.item() == pytest.approx((1 - 5 / 7) / 2, rel=1e-6)


def test_full_plus_criterion_backpropagates():
    torch.manual_seed(0)

    def pred() -> dict:
        return {"pred_logits": torch.randn(1, 4, 2, requires_grad=True),
                "pred_boxes": (torch.rand(1, 4, 4) * 0.4 + 0.3).requires_grad_(),
                "pred_vectors": torch.randn(1, 4, 256, requires_grad=True),
                "pred_ious": torch.randn(1, 4, 1, requires_grad=True)}

    outputs = pred()
    outputs["aux_outputs"] = [pred()]
    outputs["enc_tokens"] = {"pred_logits": [torch.randn(1, 4, 4, 2, requires_grad=True)]}
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 4:12, 2:10] = True
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[6 / 16, 0.5, 0.5, 0.5]]), "masks": masks}]
    losses = ViDTCriterion(PLUS)(outputs, targets)
    expected = {"loss_ce", "loss_bbox", "loss_giou", "loss_iouaware", "loss_vector", "loss_token_focal", "loss_token_dice"}
    assert expected | {f"{k}_0" for k in expected - {"loss_token_focal", "loss_token_dice"}} <= set(losses)
    losses["loss"].backward()
    assert outputs["pred_vectors"].grad.abs().sum() > 0
    assert outputs["aux_outputs"][0]["pred_ious"].grad.abs().sum() > 0
    assert outputs["enc_tokens"]["pred_logits"][0].grad.abs().sum() > 0
