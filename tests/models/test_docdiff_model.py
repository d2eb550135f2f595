"""DocDiff networks, schedule and sampler: sizes, parameter counts, hand-checked step maths."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from zoo.models.docdiff.model import (
    DocDiff,
    DocDiffConfig,
    alphas_cumprod,
    linear_betas,
    preset_config,
    sample,
    sampling_timesteps,
)

MICRO = preset_config("micro")



def _counts(config: DocDiffConfig) -> tuple[int, int]:
    with torch.device("meta"):
        model = DocDiff(config)
    return (sum(p.numel() for p in model.init_predictor.parameters()),
            sum(p.numel() for p in model.denoiser.parameters()))


def test_paper_parameter_counts():
    cp, hrr = _counts(preset_config("deblur"))
    # paper Table: CP 4.03M, HRR 4.17M (reference code: 4.18M)
    assert round(cp / 1e6, 2) == 4.03
    assert round(hrr / 1e6, 2) == 4.18
    assert (cp, hrr) == (4_031_459, 4_176_899)
    for task in ("denoise", "watermark", "seal"):
        assert _counts(preset_config(task)) == (cp, hrr)


def test_structure_follows_reference():
    model = DocDiff(preset_config("deblur"))
    keys = model.state_dict().keys()
    # the CP has no time embedding anywhere; the HRR has one in every block but the middle
    assert not any("time_emb" in k for k in keys if k.startswith("init_predictor."))
    assert "denoiser.time_emb.lin1.weight" in keys and "denoiser.down.0.res.time_emb.weight" in keys
    assert not any(k.startswith("denoiser.middle") and "time_emb" in k for k in keys)
    assert model.init_predictor.image_proj.in_channels == 3 and model.denoiser.image_proj.in_channels == 6
    assert model.denoiser.time_emb.lin1.in_features == 32 and model.denoiser.time_emb.lin1.out_features == 128
    assert [getattr(model.denoiser.middle, f"dia{i}").dilation[0] for i in range(1, 5)] == [2, 4, 8, 16]
    assert model.denoiser.middle.dia1.in_channels == 128  # 32 * 4 at the bottom
    up = [m for m in model.denoiser.up if hasattr(m, "conv")]
    assert all(isinstance(m.conv, torch.nn.ConvTranspose2d) and m.conv.kernel_size == (4, 4) for m in up)
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d)) for m in model.modules())
    assert not any("gammas" in k for k in keys)  # tables are rebuilt, not stored


def test_shapes_any_multiple_of_eight():
    model = DocDiff(MICRO).eval()
    for h, w in ((32, 32), (40, 72), (128, 96)):
        x = torch.rand(2, 3, h, w)
        coarse = model.coarse(x)
        assert coarse.shape == x.shape
        t = torch.tensor([0, 99])
        nxt, r0 = model.ddim_step(torch.randn_like(x), coarse, t, t - 1)
        assert nxt.shape == r0.shape == x.shape


def test_schedule_values():
    betas = linear_betas(100)
    assert betas[0].item() == pytest.approx(1e-5) and betas[-1].item() == pytest.approx(0.2)
    assert betas[1].item() == pytest.approx(1e-5 + (0.2 - 1e-5) / 99)
    gammas = alphas_cumprod(100)
    assert gammas[0].item() == pytest.approx(1 - 1e-5)
    assert gammas[1].item() == pytest.approx((1 - 1e-5) * (1 - betas[1].item()))
    model = DocDiff(MICRO)
    assert model.gamma(torch.tensor([-1])).item() == 1.0
    assert model.gamma(torch.tensor([99])).item() == pytest.approx(gammas[-1].item(), rel=1e-6)


def test_sampling_timesteps():
    full = sampling_timesteps(100, 100)
    assert full[0] == (99, 98) and full[-2] == (1, 0) and full[-1] == (0, -1) and len(full) == 100
    assert sampling_timesteps(100, 5) == [(99, 74), (74, 50), (50, 25), (25, 0), (0, -1)]
    assert sampling_timesteps(100, 1) == [(99, -1)]
    assert sampling_timesteps(100, 500) == full


def test_ddim_step_by_hand():
    model = DocDiff(MICRO).eval()
    x = torch.randn(1, 3, 16, 16)
    coarse = torch.rand(1, 3, 16, 16)
    t, tp = torch.tensor([50]), torch.tensor([20])
    nxt, r0 = model.ddim_step(x, coarse, t, tp)
    g = alphas_cumprod(100)
    g_t, g_p = g[50].item(), g[20].item()
    eps = (x - g_t**0.5 * r0) / (1 - g_t) ** 0.5
    torch.testing.assert_close(nxt, g_p**0.5 * r0 + (1 - g_p) ** 0.5 * eps, rtol=1e-4, atol=1e-5)
    last, r0_last = model.ddim_step(x, coarse, torch.tensor([0]), torch.tensor([-1]))
    torch.testing.assert_close(last, r0_last, rtol=0, atol=1e-5)


def test_full_sampler_matches_reference_loop():
    """All 100 steps equal the reference's PRE_ORI loop (schedule/diffusionSample.py)."""
    model = DocDiff(dataclasses.replace(MICRO, timesteps=100)).eval()
    x = torch.rand(1, 3, 32, 32)
    noise = torch.randn(1, 3, 32, 32)
    ours, coarse = sample(model, x, 100, noise)
    g = alphas_cumprod(100).float()
    r = noise
    with torch.no_grad():
        for step in reversed(range(100)):
            t = torch.tensor([step])
            ori = model.denoiser(torch.cat((r, coarse), 1), t)
            if step > 0:
                eps = (r - g[step].sqrt() * ori) / (1 - g[step]).sqrt()
                r = g[step - 1].sqrt() * ori + (1 - g[step - 1]).sqrt() * eps
            else:
                r = ori
    torch.testing.assert_close(ours, coarse + r, rtol=1e-4, atol=1e-4)
