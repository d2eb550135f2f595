"""EfficientAD training stages: short micro runs, determinism, calibration, teacher distillation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from zoo.data.anomaly import generate_anomaly_dataset
from zoo.models.efficientad.model import EfficientAD, EfficientADConfig
from zoo.models.efficientad.train import (
    EfficientADTrainable,
    EfficientADTrainConfig,
    PenaltyImages,
    TeacherDistillation,
    TeacherTrainConfig,
    build_anomaly_task,
    build_teacher_task,
    evaluate_anomaly,
    load_backbone_weights,
    patchcore_aggregate,
)
from zoo.trainable import TrainTask

MICRO = EfficientADConfig(size="micro", out_channels=16, image_size=128, ae_channels=16, pdn_widths=(16, 32, 32))



def _model(seed: int = 0) -> EfficientAD:
    torch.manual_seed(seed)
    return EfficientAD(MICRO)


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A small procedural category in the MVTec layout (structural defects, defects.json)."""
    root = tmp_path_factory.mktemp("mvtec")
    return generate_anomaly_dataset(root, "brick", seed=0, image_size=128, n_train=8, n_test_good=3,
                                    n_test_per_defect=2)


def _run(task: TrainTask, steps: int, seed: int = 0, lr: float | None = None) -> list[float]:
    """A minimal stand-in for the shared loop: seed, setup, Adam over task.parameters, steps."""
    torch.manual_seed(seed)
    module = task.module
    if task.setup is not None:
        task.setup(module, None)
    cfg = task.config
    optimizer = torch.optim.Adam(list(task.parameters(module)), lr=lr or cfg.lr, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(task.dataset, batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    module.train()
    losses: list[float] = []
    while len(losses) < steps:
        for batch in loader:
            out = task.module.training_step(batch)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            losses.append(out["loss"].item())
            if len(losses) == steps:
                break
    return losses


def test_paper_defaults():
    ad = EfficientADTrainConfig()
    assert (ad.steps, ad.batch_size, ad.lr, ad.weight_decay, ad.optimizer) == (70_000, 1, 1e-4, 1e-5, "adam")
    assert (ad.schedule, ad.lr_milestones, ad.lr_gamma) == ("step", (0.95,), 0.1)
    assert (ad.hard_quantile, ad.quantile_a, ad.quantile_b, ad.validation_fraction) == (0.999, 0.9, 0.995, 0.1)
    teacher = TeacherTrainConfig()
    assert (teacher.steps, teacher.batch_size, teacher.lr, teacher.weight_decay) == (60_000, 16, 1e-4, 1e-5)
    assert (teacher.backbone, teacher.grayscale, teacher.layers) == ("wide_resnet101_2", 0.1, (2, 3))
    assert teacher.override({"backbone": "resnet50"}).backbone == "resnet50"


def test_anomaly_stage_trains_and_calibrates(category, tmp_path):
    model = _model()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    config = EfficientADTrainConfig(steps=40)
    task = build_anomaly_task(model, str(category), config, seed=0, workdir=tmp_path)
    assert isinstance(task.module, EfficientADTrainable)
    assert len(task.dataset) == 7  # 8 train images, one held out for the quantiles
    assert len(task.extra["validation"]) == 1
    trained = {id(p) for p in task.parameters(task.module)}
    assert trained == {id(p) for p in [*model.student.parameters(), *model.ae.parameters()]}

    losses = _run(task, steps=40, lr=3e-3)
    # setup standardised the teacher: its channel std is no longer the identity default
    assert not torch.allclose(model.teacher_std, torch.ones_like(model.teacher_std))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, losses
    for key, value in model.teacher.state_dict().items():  # the teacher is frozen
        assert torch.equal(value, teacher_before[key])
    assert not model.teacher.training and model.ae.training

    metrics = task.finalize(task.module)
    for name in ("st", "ae"):
        q_a, q_b = metrics[f"q_{name}_start"], metrics[f"q_{name}_end"]
        assert math.isfinite(q_a) and math.isfinite(q_b) and q_b > q_a
        assert getattr(model, f"q_{name}_start").item() == pytest.approx(q_a)
        assert getattr(model, f"q_{name}_end").item() == pytest.approx(q_b)
    assert 0.0 <= metrics["image_auroc"] <= 1.0

    pipeline_model = task.to_pipeline(task.module)
    assert pipeline_model is model
    image = task.extra["validation"][0]["image"][None]
    anomaly_map, score = pipeline_model.eval()(image)
    assert anomaly_map.shape == (1, 1, 128, 128) and torch.isfinite(score).all()
    # Sec. 3.4 on the calibration image itself: the 0.995 quantile maps to 0.1, so its
    # normalised maps exceed 0.1 on only ~0.5 % of the pixels.
    assert (anomaly_map > 0.1).float().mean().item() < 0.05


def test_same_seed_same_losses(category, tmp_path):
    runs = []
    for _ in range(2):
        task = build_anomaly_task(_model(), str(category), EfficientADTrainConfig(steps=5), seed=0, workdir=tmp_path)
        runs.append(_run(task, steps=5))
    assert runs[0] == runs[1]
    other = build_anomaly_task(_model(), str(category), EfficientADTrainConfig(steps=5), seed=0, workdir=tmp_path)
    assert _run(other, steps=5, seed=1) != runs[0]


def test_training_step_penalty_and_rng(category, tmp_path):
    task = build_anomaly_task(_model(), str(category), EfficientADTrainConfig(use_penalty=False), seed=0,
                              workdir=tmp_path)
    assert task.module.penalty is None
    batch = {"image": task.dataset[0]["image"][None]}
    task.module.train()
    torch.manual_seed(7)
    first = task.module.training_step(batch)
    torch.manual_seed(7)
    second = task.module.training_step(batch)
    assert first["penalty"].item() == 0.0
    assert first["loss"].item() == second["loss"].item()  # jitter and dropout come from the global RNG
    terms = sum(first[k].item() for k in ("hard", "penalty", "ae", "stae"))
    assert first["loss"].item() == pytest.approx(terms, rel=1e-5)


def test_evaluation_reports_each_defect_kind(category):
    from zoo.data.mvtec import MVTecAD

    test_set = MVTecAD(category, split="test", image_size=128)
    model = _model().eval()
    kinds = {"scratch": "structural", "stain": "structural", "hole": "logical"}
    metrics = evaluate_anomaly(model, test_set, kinds)
    for suffix in ("", "_structural", "_logical"):
        for name in ("image_auroc", "pixel_auroc", "au_pro"):
            assert 0.0 <= metrics[f"{name}{suffix}"] <= 1.0
    # one kind only (every MVTec AD defect is structural) would repeat the totals: not reported
    assert set(evaluate_anomaly(model, test_set, {"scratch": "structural", "hole": "structural", "stain": "structural"})) == {"image_auroc", "pixel_auroc", "au_pro"}


def test_penalty_images_are_seeded():
    penalty = PenaltyImages(32, grayscale=0.5, seed=0, length=20)
    a = penalty.draw(3, torch.Generator().manual_seed(1))
    b = penalty.draw(3, torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_synthetic_data_path(tmp_path):
    task = build_anomaly_task(_model(), "synthetic", EfficientADTrainConfig(), seed=0, workdir=tmp_path)
    assert task.extra["data"] == str(tmp_path / "data" / "brick")
    assert (tmp_path / "data" / "brick" / "defects.json").is_file()
    assert len(task.dataset) + len(task.extra["validation"]) == 60
    item = task.dataset[0]
    assert item["image"].shape == (3, 128, 128) and item["label"] == 0


def test_image_size_is_tied_to_the_variant(category, tmp_path):
    with pytest.raises(ValueError, match="tied"):
        build_anomaly_task(_model(), str(category), EfficientADTrainConfig(image_size=256), seed=0, workdir=tmp_path)


def test_patchcore_aggregate_hand_values():
    # one 1x1 position, two channels a=9, b=18: the 3x3 unfold (zero padded) keeps only the
    # centre, so pooling the 18 values to 2 averages each channel's nine: a/9 and b/9
    feat = torch.tensor([9.0, 18.0]).view(1, 2, 1, 1)
    out = patchcore_aggregate([feat], (1, 1), out_channels=2, feature_dim=18)
    assert out.shape == (1, 2, 1, 1)
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 2.0]))
    # two layers at different resolutions come out at the requested size
    layers = [torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4)]
    assert patchcore_aggregate(layers, (8, 8), out_channels=5, feature_dim=32).shape == (2, 5, 8, 8)


def _reference_order_aggregate(features, size, out_channels, feature_dim):
    """The reference's order: unfold, upsample the unfolded values, then pool each position."""
    per_layer = []
    for feat in features:
        b, c, h, w = feat.shape
        patches = torch.nn.functional.unfold(feat, 3, padding=1).reshape(b, c * 9, h, w)
        patches = torch.nn.functional.interpolate(patches, size=size, mode="bilinear", align_corners=False)
        flat = patches.permute(0, 2, 3, 1).reshape(-1, 1, c * 9)
        per_layer.append(torch.nn.functional.adaptive_avg_pool1d(flat, feature_dim)[:, 0])
    stacked = torch.stack(per_layer, dim=1).reshape(len(per_layer[0]), 1, -1)
    out = torch.nn.functional.adaptive_avg_pool1d(stacked, out_channels)
    return out.reshape(features[0].shape[0], *size, out_channels).permute(0, 3, 1, 2)


def test_patchcore_aggregate_matches_reference_order():
    gen = torch.Generator().manual_seed(0)
    layers = [torch.rand(2, 7, 8, 8, generator=gen), torch.rand(2, 13, 4, 4, generator=gen)]
    ours = patchcore_aggregate(layers, (8, 8), out_channels=11, feature_dim=24)
    assert torch.allclose(ours, _reference_order_aggregate(layers, (8, 8), 11, 24), atol=1e-6)


def test_load_backbone_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    backbone = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2, 3))
    load_backbone_weights(backbone, str(path))  # fc and layer4 are ignored
    assert torch.equal(backbone.state_dict()["layer2.0.conv1.weight"], full.state_dict()["layer2.0.conv1.weight"])
    torch.save({"conv1.weight": full.conv1.weight.detach()}, tmp_path / "partial.pth")
    with pytest.raises(KeyError, match="missing"):
        load_backbone_weights(backbone, str(tmp_path / "partial.pth"))


def test_teacher_distillation_loss_falls(tmp_path):
    model = _model()
    config = TeacherTrainConfig(steps=12, batch_size=4, image_size=64, stats_images=8, virtual_length=16, backbone="resnet18")
    task = build_teacher_task(model, "synthetic", config, seed=0, workdir=tmp_path)
    module = task.module
    assert isinstance(module, TeacherDistillation)
    assert module.backbone.feature_info.channels() == [128, 256]  # micro distils resnet18
    assert len(task.dataset) == 16 and task.dataset[0]["image"].shape == (3, 128, 128)

    torch.manual_seed(0)
    task.setup(module, None)
    assert not torch.allclose(module.target_std, torch.ones_like(module.target_std))
    optimizer = torch.optim.Adam(list(task.parameters(module)), lr=1e-3)
    batch = {"image": torch.stack([task.dataset[i]["image"] for i in range(4)])}
    module.train()
    assert not module.backbone.training
    losses = []
    for _ in range(12):
        loss = module.training_step(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses

    # the padded PDN's output matches the target grid (64 -> 16); its weights become the teacher
    prediction = module.student(module.normalize_input(torch.rand(1, 3, 64, 64)))
    assert prediction.shape == (1, MICRO.out_channels, 16, 16)
    distilled = task.to_pipeline(module)
    assert distilled is model
    for key, value in module.student.state_dict().items():
        assert torch.equal(distilled.teacher.state_dict()[key], value)
    unpadded = dataclasses.replace(MICRO, padding=False)
    assert distilled.teacher(torch.rand(1, 3, 128, 128)).shape[-1] == EfficientAD(unpadded).map_size
