"""sLCT loss terms against hand-computed values on tiny tensors; OT coupling against brute force."""

import itertools
import math

import pytest
import torch
from torch import nn

from zoo.diffusion.consistency import ConsistencyParametrisation, karras_sigmas
from zoo.models.lct.loss import cauchy_loss, consistency_loss, diffusion_weight, ot_couple_noise, pseudo_huber_loss


def test_robust_losses_hand_values():
    delta = torch.tensor([[3.0, 4.0]])  # sum of squares 25, mean 12.5
    assert cauchy_loss(delta, 1.0).item() == pytest.approx(math.log(1 + 12.5 / 2))
    assert pseudo_huber_loss(delta, 1.0).item() == pytest.approx(math.sqrt(26) - 1)
    assert pseudo_huber_loss(delta, 1.0, reduction="mean").item() == pytest.approx(math.sqrt(13.5) - 1)
    # the authors' form of the Cauchy loss, log(0.5 mean + c^2) - 2 log c, is the same value
    d = torch.randn(3, 4, 2, 2)
    c = 0.0346
    authors = torch.log(0.5 * d.pow(2).flatten(1).mean(1) + c ** 2) - 2 * math.log(c)
    torch.testing.assert_close(cauchy_loss(d, c), authors, rtol=1e-5, atol=1e-5)
    # Cauchy grows like log for large residuals, Pseudo-Huber linearly
    big = torch.tensor([[1000.0]])
    assert cauchy_loss(big, 1.0).item() < 14 < pseudo_huber_loss(big, 1.0).item()
    assert diffusion_weight(torch.tensor(0.5)).item() == pytest.approx(8.0)
    with pytest.raises(ValueError):
        pseudo_huber_loss(delta, 1.0, reduction="max")


class ScaleNet(nn.Module):
    """F(x_in, c_noise, class) = a x_in: the consistency function is then linear in its input."""

    def __init__(self, a=0.5):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, x, noise_labels, class_labels=None):
        return self.a * x


def _f(y, s, a, sd=0.5, smin=0.002):
    """c_skip y + c_out a c_in y, by hand."""
    c_skip = sd ** 2 / ((s - smin) ** 2 + sd ** 2)
    c_out = (s - smin) * sd / math.sqrt(s ** 2 + sd ** 2)
    c_in = 1 / math.sqrt(s ** 2 + sd ** 2)
    return [(c_skip + c_out * a * c_in) * v for v in y]


@pytest.mark.parametrize("kind", ["cauchy", "pseudo-huber"])
def test_consistency_loss_hand_values(kind):
    a, c, n = 0.5, 0.1, 5
    x = torch.tensor([[[[0.3, -0.2]]], [[[0.1, 0.4]]]])
    z = torch.tensor([[[[1.0, -0.5]]], [[[0.2, 0.7]]]])
    idx = torch.tensor([0, 3])  # floor(0.75 * 5) = 3: the second sample is in the diffusion term
    model = ConsistencyParametrisation(ScaleNet(a))
    out = consistency_loss(model, x, n, c, noise=z, indices=idx, loss=kind)

    sig = karras_sigmas(n).tolist()
    cm, diff = [], []
    for b in range(2):
        s, s2 = sig[idx[b]], sig[idx[b] + 1]
        xb, zb = x[b].flatten().tolist(), z[b].flatten().tolist()
        student = _f([xv + s * zv for xv, zv in zip(xb, zb)], s, a)
        target = _f([xv + s2 * zv for xv, zv in zip(xb, zb)], s2, a)
        sq = [(u - v) ** 2 for u, v in zip(student, target)]
        if kind == "cauchy":
            d = math.log(1 + (sum(sq) / 2) / (2 * c * c))
        else:
            d = math.sqrt(sum(sq) + c * c) - c
        cm.append(d / (s - s2))
        if idx[b] >= 3:
            diff.append((1 / s ** 2 + 1 / 0.25) * sum((u - v) ** 2 for u, v in zip(student, xb)) / 2)
    expected_cm, expected_diff = sum(cm) / 2, sum(diff) / len(diff)
    assert out["consistency"].item() == pytest.approx(expected_cm, rel=1e-5)
    assert out["diffusion"].item() == pytest.approx(expected_diff, rel=1e-5)
    assert out["loss"].item() == pytest.approx(expected_cm + 5 * expected_diff, rel=1e-5)
    assert out["early_fraction"].item() == 0.5
    # gradients reach the parameter through the student only
    out["loss"].backward()
    assert model.net.a.grad is not None and model.net.a.grad.abs() > 0


def test_diffusion_term_switches():
    model = ConsistencyParametrisation(ScaleNet())
    x, z = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    late = torch.tensor([0, 1, 2, 3])  # N = 11: early from index floor(8.25) = 8
    out = consistency_loss(model, x, 11, 0.05, noise=z, indices=late)
    assert out["diffusion"].item() == 0.0 and out["early_fraction"].item() == 0.0
    assert out["loss"].item() == pytest.approx(out["consistency"].item())
    early = torch.tensor([8, 9, 9, 0])
    on = consistency_loss(model, x, 11, 0.05, noise=z, indices=early)
    off = consistency_loss(model, x, 11, 0.05, noise=z, indices=early, diffusion_loss_weight=0.0)
    assert on["diffusion"].item() > 0 and off["loss"].item() == pytest.approx(off["consistency"].item())
    assert on["loss"].item() == pytest.approx(on["consistency"].item() + 5 * on["diffusion"].item(), rel=1e-6)
    with pytest.raises(ValueError):
        consistency_loss(model, x, 11, 0.05, indices=torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError):
        consistency_loss(model, x, 11, 0.05, loss="l2")


class Recorder(nn.Module):
    """Records its inputs and one random draw a call (as dropout would)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, sigma, class_labels=None):
        self.calls.append((x.detach().clone(), sigma.clone(), torch.rand(3)))
        return self.w * x


def test_student_and_target_share_noise_and_rng():
    rec = Recorder()
    x, z = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    consistency_loss(rec, x, 21, 0.01, noise=z, indices=torch.tensor([0, 5, 19]))
    (xs, s, draw_s), (xt, t, draw_t) = rec.calls
    assert (t < s).all()
    v = (-1, 1, 1, 1)
    # (x + sigma z - x) / sigma loses float32 digits at sigma ~ 0.003
    torch.testing.assert_close((xs - x) / s.view(v), z, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close((xt - x) / t.view(v), z, rtol=1e-3, atol=1e-3)
    assert torch.equal(draw_s, draw_t)  # same dropout masks in both passes


def _total_cost(x, z):
    return ((x.flatten(1) - z.flatten(1)) ** 2).sum().item()


def test_ot_coupling_is_the_optimal_permutation():
    torch.manual_seed(0)
    x, z = torch.randn(6, 2, 2, 2), torch.randn(6, 2, 2, 2)
    coupled, perm = ot_couple_noise(x, z, return_permutation=True)
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.equal(coupled, z[perm])
    best = min(_total_cost(x, z[list(p)]) for p in itertools.permutations(range(6)))
    assert _total_cost(x, coupled) == pytest.approx(best)
    assert _total_cost(x, coupled) < _total_cost(x, z)
    # a batch whose noise is a shuffled copy of the latents is matched back exactly
    p = torch.tensor([3, 0, 4, 1, 2])
    noise = torch.randn(5, 4, 3, 3)
    torch.testing.assert_close(ot_couple_noise(noise[p], noise), noise[p])
    with pytest.raises(ValueError):
        ot_couple_noise(x, z[:5])


def test_consistency_loss_applies_ot():
    rec = Recorder()
    torch.manual_seed(1)
    x, z = torch.randn(4, 2, 2, 2), torch.randn(4, 2, 2, 2)
    consistency_loss(rec, x, 11, 0.03, noise=z, indices=torch.tensor([1, 2, 3, 4]), ot_coupling=True)
    xs, s, _ = rec.calls[0]
    used = (xs - x) / s.view(-1, 1, 1, 1)
    torch.testing.assert_close(used, ot_couple_noise(x, z))
