"""AnyText's losses (Sec. 3.4, Eq. 3-5) against hand-computed values."""

import torch

from zoo.models.anytext.loss import anytext_loss, crop_lines, predict_x0, text_control_diffusion_loss, text_perceptual_loss


def test_diffusion_loss_leaves_out_invalid_text():
    eps, noise = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    inv = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert torch.allclose(text_control_diffusion_loss(eps, noise), torch.tensor([30 / 4]))
    assert torch.allclose(text_control_diffusion_loss(eps, noise, inv), torch.tensor([(1 + 9 + 16) / 4]))


def test_x0_from_the_true_noise():
    alphas = torch.tensor([0.9, 0.5, 0.1])
    x0, noise, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 1, 2])
    a = alphas[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    torch.testing.assert_close(predict_x0(x_t, noise, alphas, t), x0, atol=1e-5, rtol=1e-5)


def test_perceptual_loss_per_sample_mean_over_lines():
    """features = the mean of each preprocessed line (a stand-in for the recogniser's neck)."""
    gen, gt = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    gen[0, :, 0:4, 0:4] = 0.25   # sample 0, line 0 differs
    boxes = torch.tensor([[[0, 0, 4, 4], [4, 4, 8, 8]], [[0, 0, 4, 4], [0, 0, 0, 0]]])
    feats = lambda x: x.mean(dim=(1, 2, 3)).view(-1, 1, 1)  # noqa: E731
    loss = text_perceptual_loss(gen, gt, boxes, [2, 1], feats)
    # line (0, 0): crop value 0.25 -> normalised (0.25 - 0.5) / 0.5 = -0.5 over the 48x48 resized part of the
    # 48x320 line, padded with 0: mean -0.5 * 48 / 320; ground truth -1 * 48 / 320 -> squared difference
    d = (-0.5 * 48 / 320) - (-1.0 * 48 / 320)
    torch.testing.assert_close(loss, torch.tensor([d * d / 2, 0.0]))
    assert len(crop_lines(gen, boxes, [2, 1])) == 3


def test_total_loss_weights_perceptual_by_alpha_bar():
    td, tp, a = torch.tensor([1.0, 2.0]), torch.tensor([10.0, 20.0]), torch.tensor([0.5, 0.1])
    assert torch.allclose(anytext_loss(td, tp, a, 0.003), torch.tensor(((1 + 0.003 * 0.5 * 10) + (2 + 0.003 * 0.1 * 20)) / 2))
    assert torch.allclose(anytext_loss(td, None, a), td.mean())
