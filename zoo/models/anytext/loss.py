"""AnyText's training objectives (Tuo et al., ICLR 2024, Sec. 3.4; the reference's ddpm.py p_losses).

L = L_td + lambda * L_tp  (Eq. 5), lambda = 0.003, with
- L_td (Eq. 3), the text-control diffusion loss: || eps - eps_theta(z_t, c_t, t, c_te) ||^2 per
  latent element, left out (multiplied by 1 - inv_mask, the mask resized to the latent grid) where an
  illegible line lies, averaged per sample;
- L_tp (Eq. 4), the text perceptual loss: for each line, the MSE between the recogniser's neck features
  of the line cropped from the generated image x'_0 (x_hat_0 of the noise prediction decoded through
  the VAE, with gradients) and from the ground truth, averaged over the sample's lines, weighted by
  alpha_bar_t (the reference's `with_step_weight`: the prediction of x_0 is only meaningful at small t).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

PERCEPTUAL_WEIGHT = 0.003


def text_control_diffusion_loss(eps_pred: Tensor, noise: Tensor, inv_mask: Tensor | None = None) -> Tensor:
    """Eq. 3 per sample (B,): mean of the squared error outside the invalid-text mask (B, 1, H, W)."""
    err = (eps_pred.float() - noise.float()) ** 2
    if inv_mask is not None:
        keep = 1.0 - F.interpolate(inv_mask.float(), size=err.shape[-2:], mode="nearest")
        err = err * keep
    return err.mean(dim=(1, 2, 3))


def predict_x0(x_t: Tensor, eps: Tensor, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """x_hat_0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t) (DDPM, epsilon parameterisation)."""
    a = alphas_cumprod[t].view(-1, 1, 1, 1).to(x_t.dtype)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def crop_lines(images: Tensor, boxes: Tensor, counts: Sequence[int]) -> list[Tensor]:
    """Differentiable crops (1, 3, h, w) of each sample's first counts[b] lines; boxes (B, L, 4) int xyxy."""
    crops = []
    for b, n in enumerate(counts):
        for k in range(int(n)):
            x0, y0, x1, y1 = (int(v) for v in boxes[b, k].tolist())
            crops.append(images[b:b + 1, :, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
    return crops


def text_perceptual_loss(generated: Tensor, target: Tensor, boxes: Tensor, counts: Sequence[int],
                         features: Callable[[Tensor], Tensor], preprocess: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Eq. 4 per sample (B,): mean over the sample's lines of MSE(neck(crop(generated)), neck(crop(target)));
    0 for a sample without lines. `features`: (N, 3, 48, 320) preprocessed lines -> (N, T, C) neck features;
    `preprocess`: one crop (1, 3, h, w) -> (1, 3, 48, 320), the recogniser's own (`TextRecognizer.preprocess`;
    default PaddleOCR's `line_tensor`)."""
    from .recognizer import line_tensor

    prepare = preprocess or line_tensor
    out = generated.new_zeros(generated.shape[0])
    gen_crops, gt_crops = crop_lines(generated, boxes, counts), crop_lines(target, boxes, counts)
    if not gen_crops:
        return out
    neck = features(torch.cat([prepare(c) for c in gen_crops]))
    with torch.no_grad():
        reference = features(torch.cat([prepare(c) for c in gt_crops]))
    per_line = ((neck - reference) ** 2).mean(dim=tuple(range(1, neck.dim())))
    start = 0
    rows = []
    for count in counts:
        rows.append(per_line[start:start + int(count)].mean() if count else generated.new_zeros(()))
        start += int(count)
    return out + torch.stack(rows)


def anytext_loss(diffusion: Tensor, perceptual: Tensor | None, alpha_bar_t: Tensor, weight: float = PERCEPTUAL_WEIGHT) -> Tensor:
    """Eq. 5: mean over the batch of L_td + lambda * alpha_bar_t * L_tp."""
    total = diffusion
    if perceptual is not None:
        total = total + weight * alpha_bar_t.to(diffusion.dtype) * perceptual
    return total.mean()
