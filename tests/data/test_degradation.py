"""Real-ESRGAN second-order degradation: kernels by hand, determinism by seed, shapes and ranges."""

import math

import numpy as np
import pytest
import torch

from zoo.data._rng import rng_for
from zoo.data.degradation import DegradationConfig, DegradedPairs, degrade, gaussian_kernel, random_kernel, sinc_kernel


def test_kernels_by_hand():
    k = gaussian_kernel(5, 1.0, 1.0, 0.0)
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    assert math.isclose(float(k[2, 3] / k[2, 2]), math.exp(-0.5), rel_tol=1e-5)  # one pixel off-centre, sigma 1
    aniso = gaussian_kernel(9, 3.0, 0.5, 0.0)  # wide along x, narrow along y
    assert aniso[4, 6] > aniso[6, 4]
    rotated = gaussian_kernel(9, 3.0, 0.5, math.pi / 2)
    assert np.allclose(rotated, aniso.T, atol=1e-6)
    plateau = gaussian_kernel(7, 1.0, 1.0, 0.0, beta=2.0, plateau=True)
    assert math.isclose(float(plateau[3, 4] / plateau[3, 3]), 0.5, rel_tol=1e-5)  # 1 / (1 + 1^2)
    sinc = sinc_kernel(21, math.pi / 2)
    assert math.isclose(float(sinc.sum()), 1.0, rel_tol=1e-5) and sinc[10, 10] == sinc.max()
    cfg = DegradationConfig()
    for i in range(20):
        kern = random_kernel(rng_for(0, i), cfg, cfg.blur_sigma, cfg.sinc_prob)
        assert kern.shape[0] % 2 == 1 and 7 <= kern.shape[0] <= 21 and math.isclose(float(kern.sum()), 1.0, rel_tol=1e-4)


def test_degrade_is_deterministic_and_degrades():
    hr = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    a, b = degrade(hr, rng_for(3, "x")), degrade(hr, rng_for(3, "x"))
    assert a.shape == (16, 16, 3) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, degrade(hr, rng_for(4, "x")))
    assert 0.0 <= a.min() and a.max() <= 1.0
    # blur, noise and JPEG: the LR is far from a plain 4x4 average of the HR
    plain = hr.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    diffs = [np.abs(degrade(hr, rng_for(s, "x")) - plain).mean() for s in range(6)]
    assert min(diffs) > 0.01 and len({round(d, 4) for d in diffs}) == 6


def test_degraded_pairs_items():
    images = [np.full((80, 100, 3), 0.5, np.float32), (np.random.default_rng(1).random((30, 30)) * 255).astype(np.uint8)]
    ds = DegradedPairs(images, gt_size=32, seed=7, length=5)
    assert len(ds) == 5
    item = ds[1]  # the 30x30 grey image, upsized to the crop size
    assert item["lq"].shape == (3, 8, 8) and item["gt"].shape == (3, 32, 32)
    assert torch.equal(ds[3]["lq"], ds[3]["lq"]) and not torch.equal(ds[0]["gt"], ds[1]["gt"])
    with pytest.raises(ValueError):
        DegradedPairs(images, gt_size=30)
