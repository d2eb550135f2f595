"""Our invertible network for HF-Diff's high-frequency perceptual loss.

HF-Diff (Sami et al., arXiv 2411.13548, Sec. 3.2) compares features of an invertible neural network
pretrained on ImageNet; its code calls `feature_extractor(z) -> (base, details)` on VQ latents and
compares the detail features, but the INN itself is not released. What we built instead (our choice,
in the spirit of invertible rescaling nets, Xiao et al. ECCV 2020):

    x (B, C, H, W) --Haar--> (B, 4C, H/2, W/2) --K affine couplings--> [base (C) | detail (3C)]

- `HaarDown`: the orthonormal 2x2 Haar transform per channel (LL, LH, HL, HH), exactly invertible.
- `AffineCoupling`: the 4C channels split into the low band (C) and the detail bands (3C);
  base' = base + F(detail); detail' = detail * exp(s(base')) + G(base') with s = clamp * tanh(S / clamp)
  (soft-clamped log-scale, as IRN), each sub-network a small 3x3 conv net. Inverse in closed form.
- `InvertibleNet.features(x) -> (base, detail)` and `inverse(base, detail) -> x`; float32 round trips
  are exact to ~1e-6 (tested to 1e-5).

Pretraining (`zoo train hfdiff --stage inn`, our objective; IRN's guidance + reconstruction terms):
base should be the low-pass image (2 x the 2x2 average, the orthonormal LL band) and the image should
come back from the base alone (detail set to 0), so the detail branch carries exactly the high-frequency
content a low-pass misses, in a learned, normalised basis: the features the HF loss compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class InvertibleConfig:
    channels: int = 3  # input channels (the latent's)
    blocks: int = 4  # affine coupling blocks
    hidden: int = 32  # width of the coupling sub-networks
    clamp: float = 1.0  # soft clamp of the log-scale


class HaarDown(nn.Module):
    """Orthonormal 2x2 Haar analysis per channel: (B, C, H, W) -> (B, 4C, H/2, W/2) ordered
    [LL of every channel, LH..., HL..., HH...]; `inverse` is its exact transpose."""

    weight: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        h = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [-1.0, -1.0]],
                          [[1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]]) / 2.0
        # channel-major for the grouped conv: output channel c * 4 + k is band k of input channel c
        self.register_buffer("weight", h[:, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels
        y = F.conv2d(x, self.weight.to(x), stride=2, groups=c)  # (B, C*4) channel-major: c0b0 c0b1 ...
        b, _, h, wd = y.shape
        return y.reshape(b, c, 4, h, wd).transpose(1, 2).reshape(b, 4 * c, h, wd)

    def inverse(self, y: Tensor) -> Tensor:
        c = self.channels
        b, _, h, wd = y.shape
        y = y.reshape(b, 4, c, h, wd).transpose(1, 2).reshape(b, 4 * c, h, wd)
        return F.conv_transpose2d(y, self.weight.to(y), stride=2, groups=c)


def _subnet(cin: int, cout: int, hidden: int) -> nn.Sequential:
    last = nn.Conv2d(hidden, cout, 3, padding=1)
    for p in last.parameters():  # every block starts as the identity
        nn.init.zeros_(p)
    return nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, hidden, 3, padding=1),
                         nn.LeakyReLU(0.2), last)


class AffineCoupling(nn.Module):
    """base' = base + F(detail); detail' = detail * exp(s(base')) + G(base')."""

    def __init__(self, base: int, detail: int, hidden: int, clamp: float) -> None:
        super().__init__()
        self.base, self.clamp = base, clamp
        self.f = _subnet(detail, base, hidden)
        self.s = _subnet(base, detail, hidden)
        self.g = _subnet(base, detail, hidden)

    def _log_scale(self, base: Tensor) -> Tensor:
        return self.clamp * torch.tanh(self.s(base) / self.clamp)

    def forward(self, x: Tensor) -> Tensor:
        base, detail = x[:, : self.base], x[:, self.base :]
        base = base + self.f(detail)
        detail = detail * torch.exp(self._log_scale(base)) + self.g(base)
        return torch.cat([base, detail], dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        base, detail = y[:, : self.base], y[:, self.base :]
        detail = (detail - self.g(base)) * torch.exp(-self._log_scale(base))
        base = base - self.f(detail)
        return torch.cat([base, detail], dim=1)


class InvertibleNet(nn.Module):
    """Haar + affine couplings; `features(x) -> (base (B, C, H/2, W/2), detail (B, 3C, H/2, W/2))`."""

    def __init__(self, config: InvertibleConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.haar = HaarDown(c)
        self.couplings = [AffineCoupling(c, 3 * c, config.hidden, config.clamp) for _ in range(config.blocks)]
        self.blocks = nn.ModuleList(self.couplings)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"the INN halves the size: height and width must be even, got {tuple(x.shape[-2:])}")
        y = self.haar(x)
        for block in self.blocks:
            y = block(y)
        return y

    def inverse(self, y: Tensor) -> Tensor:
        for block in reversed(self.couplings):
            y = block.inverse(y)
        return self.haar.inverse(y)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self(x)
        c = self.config.channels
        return y[:, :c], y[:, c:]

    def reconstruct(self, base: Tensor, detail: Tensor) -> Tensor:
        return self.inverse(torch.cat([base, detail], dim=1))


def inn_pretrain_loss(inn: InvertibleNet, x: Tensor, detail_weight: float = 1.0) -> dict[str, Tensor]:
    """Our pretraining objective (module docstring): guidance MSE(base, 2 avgpool2(x)) plus
    reconstruction MSE(inverse(base, 0), x), weighted `detail_weight`."""
    base, detail = inn.features(x)
    guidance = F.mse_loss(base, 2.0 * F.avg_pool2d(x, 2))
    recon = F.mse_loss(inn.reconstruct(base, torch.zeros_like(detail)), x)
    return {"loss": guidance + detail_weight * recon, "guidance": guidance.detach(), "reconstruction": recon.detach()}
