"""SeaBird training: official defaults, the two stages and their losses, a short run whose loss falls,
the no-segmentation ablation feeding zeros, evaluation metrics."""

from __future__ import annotations

import torch

from tests.support.training_loops import fit_one_batch
from zoo.data.kitti import KittiDataset
from zoo.data.scenes3d import generate_scenes_dataset
from zoo.models.seabird.model import SeaBird, preset_config
from zoo.models.seabird.train import SeaBirdDataset, SeaBirdDetectionConfig, SeaBirdTrainable, SeaBirdTrainConfig, collate, evaluate_model


def test_official_defaults():
    seg, det = SeaBirdTrainConfig(), SeaBirdDetectionConfig()
    assert (seg.optimizer, seg.lr, seg.momentum, seg.weight_decay, seg.batch_size) == ("sgd", 0.005, 0.9, 1e-4, 2)
    assert (det.lr, det.stage, det.sem_weight, det.det_weight) == (0.0025, "detection", 35.0, 7.0)
    assert seg.lr_milestones == (0.5, 0.75)


def _batch(tmp_path, n=2):
    root = generate_scenes_dataset(tmp_path / "data", {"train": n}, seed=0)
    data = SeaBirdDataset(KittiDataset(root, "train"), preset_config("micro"))
    return data, collate([data[i] for i in range(n)])


def test_stages_log_their_terms_and_the_loss_falls(tmp_path):
    data, batch = _batch(tmp_path)
    assert batch["image"].shape == (2, 3, 96, 320) and batch["bev"].shape == (2, 2, 128, 128)
    assert batch["targets"]["hm"].shape == (2, 2, 32, 32) and batch["targets"]["mask"].sum() == sum(len(b) for b in batch["boxes"])
    torch.manual_seed(0)
    model = SeaBird(preset_config("micro"))
    seg = SeaBirdTrainable(model, SeaBirdTrainConfig())
    out = seg.training_step(batch)
    assert set(out) == {"loss", "sem"} and torch.isclose(out["loss"], 35 * out["sem"])
    det = SeaBirdTrainable(model, SeaBirdDetectionConfig())
    out = det.training_step(batch)
    assert {"det_hm", "det_off", "det_wh", "det_h3d", "det_y3d", "det_cls_theta"} <= set(out)
    total = 35 * out["sem"] + 7 * sum(out[k] for k in out if k.startswith("det_"))
    assert torch.isclose(out["loss"], total, rtol=1e-5)
    losses = fit_one_batch(det, batch, torch.optim.Adam(model.parameters(), 2e-3), 12)
    assert losses[-1] < 0.7 * losses[0], losses


def test_no_seg_ablation_feeds_zeros_and_l1_changes_the_term(tmp_path):
    _, batch = _batch(tmp_path)
    torch.manual_seed(0)
    model = SeaBird(preset_config("micro")).eval()
    SeaBirdTrainable(model, SeaBirdDetectionConfig(seg_loss="none"))
    assert model.use_seg is False
    with torch.no_grad():
        heads_a = model(batch["image"], batch["camera"])[1]
        model.sem_head.conv_sem.bias.add_(5.0)  # the segmentation changes; the detector must not see it
        heads_b = model(batch["image"], batch["camera"])[1]
    assert torch.equal(heads_a, heads_b)
    l1 = SeaBirdTrainable(SeaBird(preset_config("micro")), SeaBirdDetectionConfig(seg_loss="l1")).training_step(batch)
    assert 0 < float(l1["sem"]) < 1


def test_evaluate_reports_ap_and_seg_iou(tmp_path):
    data, _ = _batch(tmp_path, 3)
    metrics = evaluate_model(SeaBird(preset_config("micro")), data, batch_size=2)
    assert {"AP3D@0.5/Car", "APBEV@0.25/Large", "segIoU/Car"} <= set(metrics)
    assert all(0 <= v <= 1 for k, v in metrics.items() if v == v)
