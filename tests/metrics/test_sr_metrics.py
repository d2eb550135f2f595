"""Super-resolution metrics: Y-channel PSNR / SSIM and the wavelet high-frequency error by hand."""

import math

import torch

from zoo.metrics.image import haar_bands, psnr_y, rgb_to_y, sr_metrics, ssim_y, wavelet_hf_error


def test_y_channel_psnr_by_hand():
    white, black = torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 8, 8), 235 / 255))
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 8, 8), 16 / 255))
    grey = torch.full((1, 3, 8, 8), 0.5)
    shifted = grey + 0.1  # Y moves by 0.1 * (65.481 + 128.553 + 24.966) / 255
    dy = 0.1 * 219.0 / 255.0
    assert math.isclose(psnr_y(shifted, grey), 10 * math.log10(1 / dy**2), rel_tol=1e-4)
    assert math.isclose(psnr_y(shifted, grey, border=2), psnr_y(shifted, grey), rel_tol=1e-6)
    x = torch.rand(1, 3, 32, 32)
    assert math.isclose(ssim_y(x, x), 1.0, rel_tol=1e-5) and ssim_y(x, x.flip(-1)) < 0.5


def test_wavelet_hf_error_by_hand():
    flat = torch.full((1, 1, 4, 4), 0.5)
    checker = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(2, 2)[None, None]
    (band,) = haar_bands(checker)
    assert torch.allclose(band[:, 2], -torch.ones(1, 2, 2)) and band[:, :2].abs().max() == 0  # all in HH: (a - b - c + d) / 2 = -1
    # one level: HH = 1 on 4 coefficients, over 16 pixels
    assert math.isclose(wavelet_hf_error(checker, flat, levels=1), 4 / 16, rel_tol=1e-6)
    assert wavelet_hf_error(flat + 0.2, flat) == 0.0  # a constant offset is not high frequency
    assert wavelet_hf_error(checker, flat, levels=2) == wavelet_hf_error(checker, flat, levels=1)  # level 2 of a 2x2 period is flat
    m = sr_metrics(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    assert set(m) == {"psnr_y", "ssim_y", "hf_error"} and m["hf_error"] > 0
