"""ResShift's residual-shifting schedule and sampler against hand-computed values."""

import math

import torch

from zoo.diffusion.resshift import ResShiftSchedule, exponential_sqrt_etas, sample_resshift


def test_exponential_schedule_matches_the_formula():
    s = exponential_sqrt_etas(15, min_noise=0.04, etas_end=0.99, kappa=2.0, power=0.3)
    assert s.shape == (15,) and torch.all(s[1:] > s[:-1])
    start = min(0.04 / 2.0, 0.04, math.sqrt(0.001))  # 0.02
    assert math.isclose(float(s[0]), start, rel_tol=1e-12) and math.isclose(float(s[-1]), 0.99, rel_tol=1e-12)
    t = 7  # sqrt(eta_t) = start * (0.99 / start) ** ((t / 14) ** 0.3)
    assert math.isclose(float(s[t]), start * (0.99 / start) ** ((t / 14) ** 0.3), rel_tol=1e-12)


def test_forward_process_and_posterior_by_hand():
    sched = ResShiftSchedule()
    x0, y0, eps = torch.full((1, 1, 2, 2), 0.2), torch.full((1, 1, 2, 2), -0.4), torch.full((1, 1, 2, 2), 0.5)
    t = torch.tensor([3])
    eta = float(sched.etas[3])
    want = 0.2 + eta * (-0.4 - 0.2) + 2.0 * math.sqrt(eta) * 0.5
    assert torch.allclose(sched.q_sample(x0, y0, t, eps), torch.full_like(x0, want), atol=1e-6)
    # x_T: y0 + kappa * 0.99 * noise; the network input is scaled by sqrt(kappa^2 eta_t + 1)
    assert torch.allclose(sched.prior_sample(y0, eps), y0 + 2.0 * 0.99 * eps, atol=1e-6)
    assert torch.allclose(sched.scale_input(x0, t), x0 / math.sqrt(4 * eta + 1), atol=1e-6)
    # at t = 0 the posterior mean is x0 and the ancestral step adds no noise
    assert torch.allclose(sched.ancestral_step(x0, y0, torch.tensor([0]), eps), x0, atol=1e-6)


def test_ddim_step_follows_the_same_noise_path():
    """With the true x0 the deterministic step maps q_sample(x0, y0, t, eps) to q_sample(.., t-1, eps)."""
    sched = ResShiftSchedule()
    g = torch.Generator().manual_seed(0)
    x0, y0, eps = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    for step in (14, 7, 1):
        t = torch.full((2,), step)
        xt = sched.q_sample(x0, y0, t, eps)
        assert torch.allclose(sched.ddim_step(x0, xt, y0, t), sched.q_sample(x0, y0, t - 1, eps), atol=1e-5)


def test_sampler_with_an_oracle_returns_x0():
    sched = ResShiftSchedule()
    g = torch.Generator().manual_seed(1)
    x0, y0, noise = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    calls = []

    def oracle(x, t):
        calls.append(int(t[0]))
        return x0

    for method in ("ancestral", "ddim"):
        calls.clear()
        out = sample_resshift(oracle, sched, y0, noise, draw_noise=lambda: torch.randn(2, 3, 4, 4, generator=g), method=method)
        assert calls == list(range(14, -1, -1))
        assert torch.allclose(out, x0, atol=1e-5)
