"""DocDiff losses and the image metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.metrics.image import edge_f1, laplacian_error, psnr, restoration_metrics, ssim
from zoo.models.docdiff.loss import coarse_loss, diffusion_loss, laplacian, total_loss


def _impulse() -> torch.Tensor:
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    return x


def test_laplacian_hand_values():
    lap = laplacian(_impulse())
    expected = -torch.ones(3, 3)
    expected[1, 1] = 8.0
    torch.testing.assert_close(lap[0, 0], expected)
    # a constant image with zero padding: 0 inside, 3c on edges, 5c in corners
    const = laplacian(torch.full((1, 2, 4, 4), 2.0))
    assert const[0, 1, 1, 1].item() == 0.0 and const[0, 0, 0, 1].item() == 6.0 and const[0, 0, 0, 0].item() == 10.0


def test_diffusion_loss_hand_value():
    # MSE(0, impulse) = 1/9; Lap(impulse) squares sum to 64 + 8 = 72 over 9 pixels -> 8
    value = diffusion_loss(torch.zeros(1, 1, 3, 3), _impulse())
    assert value.item() == pytest.approx(1 / 9 + 2 * 8)


def test_coarse_loss_hand_value():
    # GT - Lap(GT): centre 1 - 8 = -7, the 8 others 0 - (-1) = 1 -> (49 + 8) / 9
    value = coarse_loss(torch.zeros(1, 1, 3, 3), _impulse())
    assert value.item() == pytest.approx(1 / 9 + 2 * 57 / 9)


def test_total_loss_hand_value():
    l_diff = diffusion_loss(torch.zeros(1, 1, 3, 3), _impulse())
    l_cp = coarse_loss(torch.zeros(1, 1, 3, 3), _impulse())
    assert total_loss(l_diff, l_cp).item() == pytest.approx(145 / 9 + 50 * (115 / 9) / 100)
    assert total_loss(l_diff, l_cp).item() == pytest.approx(22.5)
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), timesteps=10, beta=5.0).item() == pytest.approx(2.0)


def test_losses_vanish_on_the_target():
    x = torch.rand(2, 3, 8, 8)
    assert diffusion_loss(x, x).item() == 0.0 and coarse_loss(x, x).item() == 0.0


def test_image_metrics_hand_values():
    target = torch.full((1, 3, 16, 16), 0.5)
    assert psnr(torch.zeros_like(target), target) == pytest.approx(10 * math.log10(4))
    page = torch.ones(1, 3, 32, 32)
    page[:, :, 10:20, 8:24] = 0.0  # a black bar: sharp edges
    assert ssim(page, page) == pytest.approx(1.0, abs=1e-6)
    assert laplacian_error(page, page) == 0.0 and edge_f1(page, page) == 1.0
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(page, (2, 2, 2, 2), mode="replicate"), 5, 1)
    assert laplacian_error(blurred, page) > 0.0 and edge_f1(blurred, page) < 1.0
    metrics = restoration_metrics(blurred, page)
    assert set(metrics) == {"psnr", "ssim", "laplacian_error", "edge_f1"} and metrics["ssim"] < 1.0
