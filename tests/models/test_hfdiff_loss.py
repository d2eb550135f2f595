"""HF-Diff's losses against hand-computed values."""

import math

import torch
import torch.nn.functional as F

from zoo.metrics.image import haar_bands
from zoo.models.hfdiff.invertible import InvertibleConfig, InvertibleNet
from zoo.models.hfdiff.loss import HF_WEIGHT, distill_losses, hf_perceptual_loss, js_divergence, load_dino, teacher_loss


def test_js_divergence_by_hand():
    p = torch.tensor([[0.0, 0.0]])  # softmax: (.5, .5)
    q = torch.tensor([[math.log(3.0), 0.0]])  # softmax: (.75, .25)
    m = (0.625, 0.375)
    want = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1]))
    assert math.isclose(float(js_divergence(p, q)), want, rel_tol=1e-5)
    assert math.isclose(float(js_divergence(q, p)), want, rel_tol=1e-5)  # symmetric
    assert float(js_divergence(q, q)) < 1e-7
    far = torch.tensor([[60.0, 0.0]])
    assert math.isclose(float(js_divergence(far, -far)), math.log(2.0), rel_tol=1e-4)  # bounded by ln 2


def test_hf_loss_on_the_bare_haar_is_the_detail_band_mse():
    inn = InvertibleNet(InvertibleConfig(channels=3, blocks=2))  # zero-initialised couplings: the Haar transform
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    (da,), (db,) = haar_bands(a), haar_bands(b)
    want = HF_WEIGHT * F.mse_loss(da, db)
    assert torch.isclose(hf_perceptual_loss(inn, a, b), want, atol=1e-7)
    smooth = torch.ones(1, 3, 8, 8) * 0.5
    assert hf_perceptual_loss(inn, smooth, smooth + 0.1).item() < 1e-10  # a constant shift has no high frequency


def test_distill_terms_with_a_toy_student():
    """student(x, t) = x * (1 + t): every term is a hand-checkable MSE; T - 1 is passed as -1."""
    calls = []

    def student(x, t, scale_at=None):
        calls.append((int(t[0]), None if scale_at is None else int(scale_at[0])))
        t = torch.where(t < 0, torch.full_like(t, 14), t)
        return x * (1 + t.view(-1, 1, 1, 1).float())

    x_t, z0, zgt = torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 10.0), torch.full((1, 1, 2, 2), 2.0)
    out = distill_losses(student, x_t, z0, zgt)
    assert math.isclose(float(out["distill"]), (15.0 - 10.0) ** 2)  # f(x_T, T-1) vs the teacher's x0
    assert math.isclose(float(out["inverse"]), (10.0 - 1.0) ** 2)  # f(z0_teacher, 0) vs x_T
    assert math.isclose(float(out["gt"]), (2.0 * 15 - 2.0) ** 2)  # f(sg f(z_gt, 0), T-1) vs z_gt
    assert calls == [(-1, None), (0, -1), (0, -1), (-1, None)]  # inputs scaled at T-1 where t = 0 is passed
    assert torch.equal(out["pred"], torch.full((1, 1, 2, 2), 15.0))
    assert math.isclose(float(teacher_loss(torch.ones(3), torch.zeros(3))), 1.0)


def test_dino_embedder_random_small():
    dino = load_dino("random-small")
    e = dino(torch.rand(2, 3, 40, 40))
    assert e.shape == (2, 32) and torch.isfinite(e).all()
