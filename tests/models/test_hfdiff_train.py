"""HF-Diff's training stages: each stage's step runs and its loss falls on one batch; the stage
builders check what they need (trained teacher, pretrained INN, DINOv2 weights)."""

import pytest
import torch
from training_loops import fit_one_batch

from zoo.models.hfdiff import micro_config
from zoo.models.hfdiff.loss import load_dino
from zoo.models.hfdiff.model import HFDiffModel
from zoo.models.hfdiff.train import (
    DinoTrainConfig,
    DistillTrainable,
    DistillTrainConfig,
    HFTrainConfig,
    INNTrainable,
    INNTrainConfig,
    TeacherTrainable,
    TeacherTrainConfig,
    build_distill_task,
    evaluate_sr,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = HFDiffModel(micro_config())
    m.mark_ready("codec")  # a random codec stands in for the bundled one: the steps, not the quality, are tested
    return m


def _batch(seed=0, n=2, gt=32):
    g = torch.Generator().manual_seed(seed)
    hr = torch.nn.functional.interpolate(torch.rand(n, 3, gt // 4, gt // 4, generator=g), size=gt, mode="bilinear")
    return {"lq": torch.nn.functional.avg_pool2d(hr, 4), "gt": hr}


def test_inn_and_teacher_losses_fall(model):
    inn = INNTrainable(model, INNTrainConfig())
    losses = fit_one_batch(inn, _batch(), torch.optim.Adam(model.inn.parameters(), lr=3e-3), 15)
    assert losses[-1] < 0.7 * losses[0]
    teacher = TeacherTrainable(model, TeacherTrainConfig())
    losses = fit_one_batch(teacher, _batch(), torch.optim.Adam(model.teacher.parameters(), lr=2e-3), 12, reseed=3)
    assert losses[-1] < 0.7 * losses[0]


def test_distill_hf_and_dino_steps(tmp_path):
    torch.manual_seed(0)
    model = HFDiffModel(micro_config())
    model.mark_ready("codec"), model.mark_ready("teacher")
    with pytest.raises(ValueError, match="INN"):
        fresh = HFDiffModel(micro_config())
        fresh.mark_ready("codec"), fresh.mark_ready("teacher")
        build_distill_task(fresh, "synthetic", HFTrainConfig(gt_size=32, val_images=0), 0, tmp_path)
    model.unet.load_state_dict(model.teacher.state_dict())
    step = DistillTrainable(model, DistillTrainConfig())
    out = step.training_step(_batch())
    assert set(out) >= {"loss", "distill", "inverse", "gt"} and "hf" not in out
    model.mark_ready("inn")
    hf = DistillTrainable(model, HFTrainConfig())
    losses = fit_one_batch(hf, _batch(), torch.optim.Adam(model.unet.parameters(), lr=1e-3), 5, reseed=5)
    assert losses[-1] < 0.9 * losses[0]
    dino = DistillTrainable(model, DinoTrainConfig(), load_dino("random-small"))
    out = dino.training_step(_batch())
    assert torch.isfinite(out["js"]) and 0 <= float(out["js"]) <= 0.6932
    out["loss"].backward()
    assert model.unet.out[2].weight.grad is not None
    metrics = evaluate_sr(model.eval(), [_batch(n=1) | {"lq": _batch(n=1)["lq"][0], "gt": _batch(n=1)["gt"][0]}], teacher=True)
    assert {"bicubic_psnr_y", "student_hf_error", "teacher_ssim_y"} <= set(metrics)


def test_distill_needs_a_teacher(tmp_path):
    fresh = HFDiffModel(micro_config())
    fresh.mark_ready("codec")
    with pytest.raises(ValueError, match="teacher"):
        build_distill_task(fresh, "synthetic", DistillTrainConfig(gt_size=32), 0, tmp_path)
