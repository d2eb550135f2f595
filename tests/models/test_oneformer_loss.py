"""OneFormer losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.models.oneformer.loss import LOGIT_SCALE_INIT, OneFormerCriterion, classification_loss, contrastive_loss

SCALE = 1 / 0.07


def _orthonormal_queries() -> torch.Tensor:
    """Two images, 2 queries x 2 dims each; flattened they are the unit vectors e0 and e1 of R^4."""
    q = torch.zeros(2, 2, 2)
    q[0, 0, 0] = 3.0  # norm does not matter: the loss L2-normalises
    q[1, 1, 1] = 0.5
    return q


def test_contrastive_aligned_vs_shuffled():
    q = _orthonormal_queries()
    scale = torch.tensor(LOGIT_SCALE_INIT)
    # aligned: logits = scale * I, each CE = log(1 + exp(-scale)); two directions
    aligned = contrastive_loss(q, q.clone(), scale)
    assert aligned.item() == pytest.approx(2 * math.log1p(math.exp(-SCALE)), abs=1e-6)
    # swapped texts: every image is closest to the other image's text: CE = log(1 + exp(scale))
    shuffled = contrastive_loss(q, q.flip(0), scale)
    assert shuffled.item() == pytest.approx(2 * math.log1p(math.exp(SCALE)), rel=1e-6)
    # the temperature is clamped at 1/100
    assert contrastive_loss(q, q.flip(0), torch.tensor(math.log(1e4))).item() == pytest.approx(2 * math.log1p(math.exp(100)), rel=1e-6)


def test_contrastive_general_by_hand():
    g = torch.Generator().manual_seed(0)
    q, t = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    s = 0.3
    qn = [v / v.norm() for v in q.flatten(1)]
    tn = [v / v.norm() for v in t.flatten(1)]
    expected = 0.0
    for i in range(3):
        row = [math.exp(s) * float(qn[i] @ tn[j]) for j in range(3)]
        col = [math.exp(s) * float(tn[i] @ qn[j]) for j in range(3)]
        expected += (-row[i] + math.log(sum(math.exp(v) for v in row))) / 3
        expected += (-col[i] + math.log(sum(math.exp(v) for v in col))) / 3
    assert contrastive_loss(q, t, torch.tensor(s)).item() == pytest.approx(expected, rel=1e-5)


def test_classification_known_logits():
    # K = 2 classes + no-object; query 0 matched to class 0, query 1 unmatched (weight 0.1)
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    targets = [{"labels": torch.tensor([0])}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    nll0 = -(2.0 - math.log(math.exp(2) + 2))
    nll1 = -(1.0 - math.log(2 + math.e))
    expected = (1.0 * nll0 + 0.1 * nll1) / 1.1
    loss = classification_loss(logits, targets, indices, torch.tensor([1.0, 1.0, 0.1]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_classification_equals_official_formula():
    """Official: sum_bq w[t] nll / sum_bq ce_weight with ce_weight 1 matched, eos_coef unmatched."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 4, generator=g)
    targets = [{"labels": torch.tensor([2, 0])}, {"labels": torch.tensor([1])}]
    indices = [(torch.tensor([1, 3]), torch.tensor([1, 0])), (torch.tensor([4]), torch.tensor([0]))]
    empty = torch.tensor([1.0, 1.0, 1.0, 0.1])
    target = torch.full((2, 5), 3)
    target[0, 1], target[0, 3], target[1, 4] = 0, 2, 1
    ce_weight = torch.full((2, 5), 0.1)
    ce_weight[0, 1] = ce_weight[0, 3] = ce_weight[1, 4] = 1.0
    official = (F.cross_entropy(logits.transpose(1, 2), target, empty, reduction="none").sum(1) / ce_weight.sum()).sum()
    assert classification_loss(logits, targets, indices, empty).item() == pytest.approx(official.item(), rel=1e-6)


def _outputs(masks: torch.Tensor, labels: torch.Tensor, num_queries: int = 4, num_classes: int = 3) -> dict:
    """One image whose queries 1.. predict the targets (in reverse order) perfectly; query 0 predicts nothing."""
    n = len(labels)
    logits = torch.full((1, num_queries, num_classes + 1), -10.0)
    logits[0, :, -1] = 10.0
    mask_logits = torch.full((1, num_queries, *masks.shape[-2:]), -20.0)
    for k in range(n):
        q = num_queries - 1 - k
        logits[0, q, labels[k]] = 10.0
        logits[0, q, -1] = -10.0
        mask_logits[0, q] = torch.where(masks[k], 20.0, -20.0)
    return {"pred_logits": logits, "pred_masks": mask_logits}


def test_perfect_prediction_is_nearly_free_and_matched():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :8] = True
    masks[1, 8:, 4:12] = True
    labels = torch.tensor([1, 2])
    out = _outputs(masks, labels)
    targets = [{"labels": labels, "masks": masks}]
    crit = OneFormerCriterion(3, num_points=256, contrastive_weight=0.0)
    indices = crit.matcher(out, targets)
    assert indices[0][0].tolist() == [2, 3] and indices[0][1].tolist() == [1, 0]
    terms = crit.loss_terms(out, targets, torch.Generator().manual_seed(0))
    assert set(terms) == {"loss_ce", "loss_mask", "loss_dice"}
    assert terms["loss_ce"].item() < 1e-6
    # a wrong class on one target raises only the class term (same matching, same points)
    bad = {k: v.clone() for k, v in out.items()}
    bad["pred_logits"][0, 3, [1, 0]] = bad["pred_logits"][0, 3, [0, 1]]
    bad_terms = crit.loss_terms(bad, targets, torch.Generator().manual_seed(0))
    assert bad_terms["loss_ce"].item() > 1.0
    assert bad_terms["loss_mask"].item() == terms["loss_mask"].item() and bad_terms["loss_dice"].item() == terms["loss_dice"].item()


def test_mask_terms_follow_the_masks():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :8] = True
    masks[1, 8:, 4:12] = True
    labels = torch.tensor([1, 2])
    targets = [{"labels": labels, "masks": masks}]
    # uniform points (importance 0): the default puts 3/4 of them on the boundary, where bilinear
    # sampling blurs even a perfect prediction
    crit = OneFormerCriterion(3, num_points=1024, contrastive_weight=0.0, importance_sample_ratio=0.0)
    good = crit.loss_terms(_outputs(masks, labels), targets, torch.Generator().manual_seed(0))
    inverted = crit.loss_terms(_outputs(~masks, labels), targets, torch.Generator().manual_seed(0))
    assert good["loss_mask"].item() < 0.25 * inverted["loss_mask"].item()
    assert good["loss_dice"].item() < 0.25 * inverted["loss_dice"].item()


def test_total_weights_aux_and_contrastive():
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(3, 16, 16, generator=g) > 0.5
    targets = [{"labels": torch.tensor([0, 2]), "masks": masks[:2]}, {"labels": torch.tensor([1]), "masks": masks[2:]}]

    def pred():
        return {"pred_logits": torch.randn(2, 5, 4, generator=g), "pred_masks": torch.randn(2, 5, 8, 8, generator=g)}

    out = pred()
    out["aux_outputs"] = [pred(), pred()]
    out["contrastive_logits"], out["texts"] = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    out["logit_scale"] = torch.tensor(LOGIT_SCALE_INIT)
    crit = OneFormerCriterion(3, num_points=128)
    terms = crit.loss_terms(out, targets, torch.Generator().manual_seed(0))
    expected_names = {"loss_ce", "loss_mask", "loss_dice", "loss_contrastive"} | {
        f"loss_{k}_{i}" for k in ("ce", "mask", "dice") for i in range(2)}
    assert set(terms) == expected_names
    weights = {"ce": 2.0, "mask": 5.0, "dice": 5.0, "contrastive": 0.5}
    total = sum(weights[k.split("_")[1]] * v for k, v in terms.items())
    result = crit(out, targets, torch.Generator().manual_seed(0))
    assert result["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert result["loss_contrastive"].item() == pytest.approx(
        contrastive_loss(out["contrastive_logits"], out["texts"], out["logit_scale"]).item(), rel=1e-6)
    assert "loss_ce_0" not in result  # only final-layer terms are logged
    assert crit.num_masks(targets, torch.device("cpu")) == 3.0


def test_mask_terms_divide_by_the_number_of_masks():
    """Doubling the batch with a copy of the image leaves every term unchanged (sum / count)."""
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :8] = True
    masks[1, 8:, 4:12] = True
    labels = torch.tensor([1, 2])
    out = _outputs(masks, labels)
    out["pred_masks"] = out["pred_masks"] * 0.05  # soft, so the terms are far from 0
    targets = [{"labels": labels, "masks": masks}]
    crit = OneFormerCriterion(3, num_points=512, contrastive_weight=0.0, importance_sample_ratio=0.0)
    one = crit.loss_terms(out, targets, torch.Generator().manual_seed(0))
    two = crit.loss_terms({k: torch.cat([v, v]) for k, v in out.items()}, targets * 2, torch.Generator().manual_seed(0))
    for name in ("loss_ce", "loss_mask", "loss_dice"):
        assert two[name].item() == pytest.approx(one[name].item(), rel=0.05), name


def test_image_without_targets():
    out = {"pred_logits": torch.zeros(1, 3, 3), "pred_masks": torch.zeros(1, 3, 4, 4)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}]
    terms = OneFormerCriterion(2, num_points=64, contrastive_weight=0.0).loss_terms(out, targets)
    assert terms["loss_ce"].item() == pytest.approx(math.log(3), rel=1e-6)  # every query -> no object
    assert terms["loss_mask"].item() == 0.0 and terms["loss_dice"].item() == 0.0


def test_gradients_reach_every_input():
    g = torch.Generator().manual_seed(3)
    out = {"pred_logits": torch.randn(2, 4, 3, generator=g, requires_grad=True),
           "pred_masks": torch.randn(2, 4, 8, 8, generator=g, requires_grad=True),
           "contrastive_logits": torch.randn(2, 4, 5, generator=g, requires_grad=True),
           "texts": torch.randn(2, 4, 5, generator=g, requires_grad=True),
           "logit_scale": torch.tensor(LOGIT_SCALE_INIT, requires_grad=True)}
    masks = torch.rand(2, 16, 16, generator=g) > 0.5
    targets = [{"labels": torch.tensor([1]), "masks": masks[:1]}, {"labels": torch.tensor([0]), "masks": masks[1:]}]
    OneFormerCriterion(2, num_points=64)(out, targets)["loss"].backward()
    for name, tensor in out.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
