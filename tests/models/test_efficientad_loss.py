"""EfficientAD objectives against hand-computed values on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from zoo.models.efficientad.loss import (
    autoencoder_losses,
    color_jitter,
    distillation_loss,
    hard_feature_loss,
    map_quantiles,
    penalty_loss,
    subsample,
    teacher_channel_stats,
    total_loss,
)
from zoo.models.efficientad.model import normalize_map


def _distances_as_student(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """teacher = 0 and student = sqrt(values), so the squared distances are `values`."""
    student = values.sqrt().reshape(1, 1, 10, -1)
    return torch.zeros_like(student), student


def test_hard_loss_known_quantile():
    teacher, student = _distances_as_student(torch.arange(1000, dtype=torch.float32))
    # 0.99-quantile of 0..999 (linear interpolation) is 989.01 -> mean(990..999) = 994.5
    assert hard_feature_loss(teacher, student, q=0.99).item() == pytest.approx(994.5, rel=1e-6)
    # 0.999-quantile is 998.001 -> only 999 survives
    assert hard_feature_loss(teacher, student, q=0.999).item() == pytest.approx(999.0, rel=1e-6)
    # q = 0 keeps everything: plain MSE = mean(0..999)
    assert hard_feature_loss(teacher, student, q=0.0).item() == pytest.approx(499.5, rel=1e-6)


def test_hard_loss_uses_first_channels_and_only_hard_gradients():
    values = torch.arange(100, dtype=torch.float32)
    teacher = torch.zeros(1, 1, 10, 10)
    student = torch.cat([values.sqrt().reshape(1, 1, 10, 10), torch.full((1, 1, 10, 10), 1e3)], dim=1)
    student.requires_grad_(True)
    loss = hard_feature_loss(teacher, student, q=0.9)  # threshold 89.1 -> 90..99
    assert loss.item() == pytest.approx(94.5, rel=1e-6)
    loss.backward()
    grad = student.grad[0, 0].reshape(-1)
    assert (grad[:90] == 0).all() and (grad[90:] != 0).all()
    assert (student.grad[0, 1] == 0).all()  # the AE channels are not part of L_hard


def test_hard_loss_subsampled_quantile():
    values = torch.arange(1000, dtype=torch.float32)
    teacher, student = _distances_as_student(values)
    gen = torch.Generator().manual_seed(3)
    loss = hard_feature_loss(teacher, student, q=0.9, max_elements=50, generator=gen)
    subset = subsample(values, 50, torch.Generator().manual_seed(3))
    threshold = torch.quantile(subset, 0.9)
    expected = values[values >= threshold].mean()  # mean over all values, not just the subset
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_subsample_keeps_small_and_draws_without_replacement():
    x = torch.arange(20.0).reshape(4, 5)
    assert torch.equal(subsample(x, 100), x.reshape(-1))
    part = subsample(x, 7, torch.Generator().manual_seed(0))
    assert part.numel() == 7 and len(set(part.tolist())) == 7
    assert set(part.tolist()) <= set(range(20))


def test_penalty_loss_hand_value():
    student = torch.cat([torch.full((2, 2, 3, 3), 2.0), torch.full((2, 2, 3, 3), 100.0)], dim=1)
    assert penalty_loss(student, channels=2).item() == pytest.approx(4.0)


def test_autoencoder_losses_hand_values():
    teacher = torch.ones(1, 2, 4, 4)
    ae = torch.zeros(1, 2, 4, 4)
    student = torch.cat([torch.full((1, 2, 4, 4), 50.0), torch.full((1, 2, 4, 4), 3.0)], dim=1)
    loss_ae, loss_stae = autoencoder_losses(teacher, ae, student)
    assert loss_ae.item() == pytest.approx(1.0)
    assert loss_stae.item() == pytest.approx(9.0)
    # already-sliced student channels give the same
    assert autoencoder_losses(teacher, ae, student[:, 2:])[1].item() == pytest.approx(9.0)
    with pytest.raises(ValueError):
        autoencoder_losses(teacher, ae, student[:, :3])


def test_total_loss_is_sum_of_terms():
    teacher, student_st = _distances_as_student(torch.arange(1000, dtype=torch.float32))
    student = torch.cat([student_st, torch.zeros_like(student_st)], dim=1)  # C = 1, 2C = 2
    teacher_aug = torch.full_like(teacher, 2.0)
    ae = torch.ones_like(teacher)
    student_aug = torch.cat([torch.zeros_like(teacher), torch.full_like(teacher, 4.0)], dim=1)
    penalty = torch.cat([torch.full_like(teacher, 3.0), torch.zeros_like(teacher)], dim=1)
    out = total_loss(teacher, student, teacher_aug, ae, student_aug, penalty, q=0.99)
    assert out["hard"].item() == pytest.approx(994.5)
    assert out["penalty"].item() == pytest.approx(9.0)
    assert out["ae"].item() == pytest.approx(1.0)
    assert out["stae"].item() == pytest.approx(9.0)
    assert out["loss"].item() == pytest.approx(994.5 + 9 + 1 + 9)
    without = total_loss(teacher, student, teacher_aug, ae, student_aug, None, q=0.99)
    assert without["penalty"].item() == 0.0
    assert without["loss"].item() == pytest.approx(994.5 + 1 + 9)


def test_map_quantiles_and_normalisation():
    maps = torch.arange(1001, dtype=torch.float32).reshape(1, 1, 7, 143)
    q_a, q_b = map_quantiles(maps)
    assert q_a.item() == pytest.approx(900.0) and q_b.item() == pytest.approx(995.0)
    # a list of maps is concatenated first
    q_a2, q_b2 = map_quantiles([maps[..., :50], maps[..., 50:]])
    assert (q_a2.item(), q_b2.item()) == (q_a.item(), q_b.item())
    # Sec. 3.4: q_a -> 0 and q_b -> 0.1
    normed = normalize_map(torch.tensor([900.0, 995.0, 1090.0]), q_a, q_b)
    assert torch.allclose(normed, torch.tensor([0.0, 0.1, 0.2]), atol=1e-6)


def test_map_quantiles_subsampled_is_reproducible():
    maps = torch.rand(1, 1, 100, 100, generator=torch.Generator().manual_seed(1))
    first = map_quantiles(maps, max_elements=2000)
    second = map_quantiles(maps, max_elements=2000)
    assert first == second  # fixed-seed subset
    exact = map_quantiles(maps)
    assert abs(first[0].item() - exact[0].item()) < 0.05 and first[1] > first[0]


def test_teacher_channel_stats_matches_population_moments():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, 4, 5, generator=gen) * torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1)
               + torch.tensor([0.0, 10.0, -3.0]).view(1, 3, 1, 1) for n in (1, 3, 2)]
    mean, std = teacher_channel_stats(iter(batches))
    all_values = torch.cat(batches).transpose(0, 1).reshape(3, -1)
    assert mean.shape == (1, 3, 1, 1) and std.shape == (1, 3, 1, 1)
    assert torch.allclose(mean.flatten(), all_values.mean(dim=1), atol=1e-5)
    assert torch.allclose(std.flatten(), all_values.std(dim=1, unbiased=False), atol=1e-5)


def test_teacher_channel_stats_hand_values():
    # channel 0: values 1 and 3 -> mean 2, std 1; channel 1 constant 5 -> std 0, floored at eps
    a = torch.tensor([[[[1.0]], [[5.0]]]])
    b = torch.tensor([[[[3.0]], [[5.0]]]])
    mean, std = teacher_channel_stats([a, b], eps=0.0)
    assert mean.flatten().tolist() == [2.0, 5.0]
    assert std.flatten().tolist() == [1.0, 0.0]
    assert teacher_channel_stats([a, b])[1].flatten().tolist() == pytest.approx([1.0, 1e-6])
    with pytest.raises(ValueError):
        teacher_channel_stats([])


def test_distillation_loss_hand_value():
    prediction = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    assert distillation_loss(prediction, target).item() == pytest.approx(5.0)  # (1 + 9) / 2
    mean = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    std = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    assert distillation_loss(prediction, target, mean, std).item() == pytest.approx(0.5)  # (0 + 1) / 2


def test_color_jitter_is_seeded_and_matches_torchvision():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out1 = color_jitter(images, generator=torch.Generator().manual_seed(5))
    out2 = color_jitter(images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out1, out2)
    assert out1.min() >= 0 and out1.max() <= 1 and not torch.equal(out1, images)
    # replay the draws: one op index, then one factor in [0.8, 1.2] per image
    gen = torch.Generator().manual_seed(5)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for image, got in zip(images, out1):
        op = int(torch.randint(3, (1,), generator=gen))
        factor = float(torch.empty(()).uniform_(0.8, 1.2, generator=gen))
        assert 0.8 <= factor <= 1.2
        assert torch.allclose(got, ops[op](image, factor))
    # a factor of exactly 1 leaves every image unchanged
    assert torch.allclose(color_jitter(images, 1.0, 1.0), images)
