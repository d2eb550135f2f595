"""Our PQ and mIoU (zoo.metrics.segmentation) cross-checked against torchmetrics 1.9 (issue #19).

Our PQ follows panopticapi's `pq_compute`; torchmetrics' `PanopticQuality` differs in three
conventions, so the random cases below stay where both are defined and the hand cases state
each difference:
- torchmetrics has no crowd regions (`iscrowd`); ours ignores predictions lying on a crowd
  region of their class. Random cases have no crowd.
- A pixel the *prediction* leaves void (id 0, torchmetrics' unknown category): torchmetrics
  leaves it out of the union and ignores a ground-truth segment more than half void in the
  prediction (no FN); panopticapi and ours count those pixels in the union and count the FN.
  Random predictions therefore cover every pixel; ground-truth void is random in both.
- torchmetrics merges all pixels of a stuff class into one segment (instance id reset to 0);
  COCO panoptic has one segment per stuff class and image, as our random cases do.
Both average PQ/SQ/RQ over the classes with TP + FP + FN > 0.

Mean IoU: ours is the dataset-level mIoU of an accumulated confusion matrix (mmseg /
Cityscapes convention), classes absent from ground truth and prediction skipped (NaN).
That is `JaccardIndex(task="multiclass", average="macro", ignore_index=...)` (absent classes
get weight 0; per class torchmetrics writes 0 where we write NaN). `MeanIoU` averages
per-image IoUs instead, and has no ignore_index: equal to ours on one image, not on several.
"""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.detection import PanopticQuality as TMPanopticQuality
from torchmetrics.segmentation import MeanIoU

from zoo.metrics.segmentation import PanopticQuality, mean_iou

THINGS, STUFFS = (1, 2), (3, 4)
CATS = {1: True, 2: True, 3: False, 4: False}


def _paint(rng: np.random.Generator, sem: np.ndarray, inst: np.ndarray, n: int, void: bool) -> None:
    """Paint n random rectangles of random class (and instance for things) onto (sem, inst)."""
    h, w = sem.shape
    for _ in range(n):
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        cat = int(rng.integers(0 if void else 1, 5))  # 0 = void
        sem[y0:y1, x0:x1] = cat
        inst[y0:y1, x0:x1] = int(rng.integers(1, 4)) if cat in THINGS else 0


def _to_ours(sem: np.ndarray, inst: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """(class, instance) maps -> panoptic id map (0 = void) and segments_info."""
    pan = np.zeros(sem.shape, np.int64)
    segs = []
    for k, (c, i) in enumerate(sorted({(int(c), int(i)) for c, i in zip(sem.ravel(), inst.ravel()) if c != 0}), 1):
        pan[(sem == c) & (inst == i)] = k
        segs.append({"id": k, "category_id": c})
    return pan, segs


def _to_torchmetrics(sem: np.ndarray, inst: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([sem, inst], -1)).long()[None]  # (1, H, W, 2); class 0 = void


def _both(pairs):
    ours = PanopticQuality(CATS)
    tm = TMPanopticQuality(things=set(THINGS), stuffs=set(STUFFS), allow_unknown_preds_category=True,
                           return_sq_and_rq=True, return_per_class=True)
    for (ps, pi), (gs, gi) in pairs:
        ours.update(*_to_ours(ps, pi), *_to_ours(gs, gi))
        tm.update(_to_torchmetrics(ps, pi), _to_torchmetrics(gs, gi))
    # torchmetrics orders classes things then stuffs, each sorted: 1, 2, 3, 4
    return ours.compute(), tm.compute().reshape(-1, 3).double().numpy(), ours


@pytest.mark.parametrize("seed", range(6))
def test_pq_equals_torchmetrics_on_random_panoptic_maps(seed):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(3):  # three images accumulated
        gs, gi = np.zeros((16, 20), np.int64), np.zeros((16, 20), np.int64)
        _paint(rng, gs, gi, 8, void=True)  # ground truth with void
        ps, pi = gs.copy(), gi.copy()
        ps[ps == 0] = 3  # the prediction covers every pixel (see the module docstring)
        _paint(rng, ps, pi, int(rng.integers(0, 4)), void=False)  # perturbed: some TP, FP, FN
        pairs.append(((ps, pi), (gs, gi)))
    ours, tm, stats = _both(pairs)
    counted = [c for c in sorted(CATS) if stats.tp[c] + stats.fp[c] + stats.fn[c] > 0]
    assert counted, "the random case must exercise some class"
    assert any(stats.tp[c] for c in CATS) and any(stats.fp[c] + stats.fn[c] for c in CATS), "want TPs and errors"
    for k, c in enumerate(sorted(CATS)):
        if c in counted:
            pc = ours["per_class"][c]
            assert [pc["pq"], pc["sq"], pc["rq"]] == pytest.approx(tm[k].tolist(), abs=1e-6), c
        else:
            assert c not in ours["per_class"] and tm[k].tolist() == [0.0, 0.0, 0.0]
    tm_all = TMPanopticQuality(things=set(THINGS), stuffs=set(STUFFS), allow_unknown_preds_category=True,
                               return_sq_and_rq=True)
    for (ps, pi), (gs, gi) in pairs:
        tm_all.update(_to_torchmetrics(ps, pi), _to_torchmetrics(gs, gi))
    assert [ours["All"][k] for k in ("pq", "sq", "rq")] == pytest.approx(tm_all.compute().tolist(), abs=1e-6)


def test_pq_differs_from_torchmetrics_where_the_prediction_leaves_pixels_void():
    # gt: one thing segment of class 1 (the left 10 columns) and stuff 3 (the rest)
    gs = np.full((4, 16), 3, np.int64)
    gs[:, :10] = 1
    gi = np.where(gs == 1, 1, 0)
    # prediction: class 1 on columns 0-4, void on 5-9 (class 0), stuff 3 on the rest
    ps = gs.copy()
    ps[:, 5:10] = 0
    pi = np.where(ps == 1, 1, 0)
    ours, tm, stats = _both([((ps, pi), (gs, gi))])
    # panopticapi / ours: IoU 20/40 = 0.5 is not > 0.5 -> FP + FN for class 1
    assert stats.tp[1] == 0 and stats.fp[1] == 1 and stats.fn[1] == 1 and ours["per_class"][1]["pq"] == 0.0
    # torchmetrics: the 20 pixels void in the prediction leave the union -> IoU 20/20, a TP
    assert tm[0].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_pq_crowd_is_ours_only():
    # torchmetrics has no iscrowd: the same map with the crowd flag dropped scores an FN there.
    gs = np.full((4, 8), 3, np.int64)
    gs[:, 4:] = 1
    gi = np.where(gs == 1, 1, 0)
    pan, segs = _to_ours(gs, gi)
    crowd = [dict(s, iscrowd=1) if s["category_id"] == 1 else s for s in segs]
    pred = np.where(gs == 3, pan, 0)  # predicts the stuff only
    ours = PanopticQuality(CATS)
    ours.update(pred, [s for s in segs if s["category_id"] == 3], pan, crowd)
    assert ours.fn[1] == 0 and ours.compute()["All"]["pq"] == pytest.approx(1.0)
    _, tm, _ = _both([((np.where(gs == 3, 3, 4), np.zeros_like(gi)), (gs, gi))])
    assert tm[0].tolist() == [0.0, 0.0, 0.0]  # class 1 counted as a miss (PQ 0) in torchmetrics


@pytest.mark.parametrize("seed", range(4))
def test_miou_equals_torchmetrics_jaccard_on_random_label_maps(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes = 6  # class 5 never drawn: absent from both, skipped by both
    gts = torch.randint(0, 5, (3, 12, 10), generator=g)
    preds = torch.where(torch.rand(3, 12, 10, generator=g) < 0.6, gts, torch.randint(0, 5, (3, 12, 10), generator=g))
    gts[torch.rand(3, 12, 10, generator=g) < 0.1] = 255  # ignored pixels
    ours = mean_iou(list(preds.numpy()), list(gts.numpy()), num_classes=num_classes, ignore_index=255)
    macro = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=255)
    per_class = MulticlassJaccardIndex(num_classes, average="none", ignore_index=255)
    for p, t in zip(preds, gts):  # accumulated over images, as ours
        macro.update(p[None], t[None])
        per_class.update(p[None], t[None])
    assert ours["miou"] == pytest.approx(macro.compute().item(), abs=1e-6)
    iou = np.array(ours["iou"])
    assert np.isnan(iou[5]) and per_class.compute()[5].item() == 0.0  # absent class: NaN (ours) vs 0
    assert iou[:5] == pytest.approx(per_class.compute()[:5].numpy(), abs=1e-6)


def test_miou_equals_torchmetrics_meaniou_on_one_image_but_not_on_several():
    g = torch.Generator().manual_seed(7)
    gts = torch.randint(0, 4, (2, 8, 8), generator=g)
    gts[1][gts[1] == 3] = 0  # class 3 absent from image 2's ground truth
    preds = torch.where(torch.rand(2, 8, 8, generator=g) < 0.5, gts, torch.randint(0, 3, (2, 8, 8), generator=g))
    one = MeanIoU(num_classes=4, input_format="index")
    one.update(preds[:1], gts[:1])
    assert mean_iou(preds[0].numpy(), gts[0].numpy(), 4)["miou"] == pytest.approx(one.compute().item(), abs=1e-6)
    # On several images MeanIoU averages per-image IoUs; ours (and JaccardIndex) pool the pixels.
    both = MeanIoU(num_classes=4, input_format="index")
    both.update(preds, gts)
    ours = mean_iou(list(preds.numpy()), list(gts.numpy()), 4)["miou"]
    assert abs(ours - both.compute().item()) > 1e-4
