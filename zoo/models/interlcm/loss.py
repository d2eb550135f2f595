"""InterLCM's training objective (Li et al., ICLR 2025, Sec. 3.4, Eq. 9; sen-mao/InterLCM
`options/interlcm.yml`, `basicsr/models/codeformer_joint_model.py`), on the image decoded from the few-step
chain's last x0 estimate:

    L = 1.0 L1(x_hat, x) + 1.0 L_per(x_hat, x) + 0.1 L_GAN(x_hat)     (the GAN term from a set iteration, 10,001)

- L1 over images in [-1, 1] (the official data are normalised with mean = std = 0.5), i.e. 2 x L1 in [0, 1].
- L_per: LPIPS (Zhang et al. 2018) in the official code. LPIPS' VGG and linear-layer weights are not
  available offline, so the perceptual term is `zoo.diffusion.perceptual`'s LPIPS-form distance (Eq. 1 of
  LPIPS with unit layer weights) over a frozen local network: zoo's shipped shapes classifier by default,
  a timm network with a local weights file (`timm:vgg16` + weights=PATH gives LPIPS' backbone), or the
  fixed random conv stand-in. The choice is recorded in the weights' sidecar.
- L_GAN: hinge loss (Lim & Ye 2017) with CodeFormer's VQGAN PatchGAN discriminator (`PatchDiscriminator`:
  4 stride-2 convs, 64 base width, BatchNorm, LeakyReLU 0.2); the generator term is -mean D(x_hat), the
  discriminator's mean relu(1 - D(x)) + mean relu(1 + D(x_hat)); the official weight is the fixed
  `scale_adaptive_gan_weight` 0.1 (its adaptive weighting is off in the joint model).
"""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """CodeFormer's `VQGANDiscriminator` layout (a PatchGAN, Isola et al. 2017): conv 4x4/2 + LeakyReLU, then
    n_layers - 1 convs 4x4/2 with BatchNorm, widths ndf x min(2^n, 8), one 4x4/1 conv with BatchNorm, and a
    4x4/1 conv to one logit map."""

    def __init__(self, channels: int = 3, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) in [-1, 1] -> logits (B, 1, h, w)."""
        return self.main(image)


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-mean D(G(z)) (the generator side of the hinge GAN; basicsr's GANLoss 'hinge', is_disc=False)."""
    return -fake_logits.mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    return (1 - real_logits).relu().mean() + (1 + fake_logits).relu().mean()


def restoration_losses(output: Tensor, target: Tensor, perceptual: nn.Module | None, discriminator: nn.Module | None,
                       l1_weight: float = 1.0, perceptual_weight: float = 1.0, gan_weight: float = 0.1,
                       gan: bool = False) -> dict[str, Tensor]:
    """Eq. 9 on images in [0, 1] (mapped to [-1, 1] as the official data are): the generator's total under
    "loss" and each term; with `gan`, the discriminator's own hinge loss under "disc" (on the detached output,
    its gradients reaching the discriminator only; the generator term sees a frozen discriminator)."""
    out, gt = output * 2 - 1, target * 2 - 1
    l1 = (out - gt).abs().mean()
    zero = l1.new_zeros(())
    per = perceptual(output, target).mean() if perceptual is not None and perceptual_weight > 0 else zero
    total = l1_weight * l1 + perceptual_weight * per
    terms = {"l1": l1.detach(), "perceptual": per.detach()}
    if gan and discriminator is not None:
        discriminator.requires_grad_(False)
        g_loss = hinge_generator_loss(discriminator(out))
        discriminator.requires_grad_(True)
        d_loss = hinge_discriminator_loss(discriminator(gt), discriminator(out.detach()))
        total = total + gan_weight * g_loss
        terms.update({"gan": g_loss.detach(), "disc": d_loss})
    terms["loss"] = total
    return terms
