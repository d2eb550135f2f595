"""DocDiff networks: the Coarse Predictor (CP) and the High-Frequency Residual Refinement (HRR)
U-Nets, the residual diffusion schedule and the deterministic sampler step.

Paper: Yang et al., "DocDiff: Document Enhancement via Residual Diffusion Models", ACM MM 2023
(arXiv:2305.03892), Sec. 3 (method). Sizes and module names follow the official code
(Royalvice/DocDiff `model/DocDiff.py`, `conf.yml`), so its `init_predictor` / `denoiser` state
dicts load with the same keys:

- both U-Nets: a 3x3 `image_proj`, one `ResidualBlock` per level (Swish, two 3x3 convs, no
  normalisation, dropout 0.1 before the second conv), stride-2 3x3 conv down, ConvTranspose
  (k4, s2) up, widths `base * mults` with base 32 and mults (1, 2, 3, 4);
- the middle block: ResBlock -> dilated 3x3 convs (dilation 2, 4, 8, 16; no activations in
  between, as the reference) -> ResBlock, never time-conditioned;
- CP (`init_predictor`): 3 channels in, no time embedding; HRR (`denoiser`): the noisy residual
  and the (detached) CP output concatenated, 6 channels in, sinusoidal time embedding of width
  4 * base added in every ResBlock outside the middle.

Residual diffusion (paper Sec. 3, "High-Frequency Residual Refinement"): r = GT - CP(x) is diffused with T = 100 steps and the reference's
"scaled linear" betas, linspace(1e-6, 0.02) * 1000 / T = (1e-5 ... 0.2); the HRR predicts r_0
(x_0-prediction) and sampling is deterministic (DDIM with eta = 0). Output = r_0 + CP(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DocDiffConfig:
    """Sizes of both U-Nets and the diffusion schedule. `task` names the degradation a variant
    is trained for (it selects the procedural data; it does not change the networks)."""

    task: str = "deblur"  # deblur | denoise | watermark | seal | mixed
    base_channels: int = 32  # conf.yml MODEL_CHANNELS
    channel_mults: tuple[int, ...] = (1, 2, 3, 4)  # conf.yml CHANNEL_MULT
    num_res_blocks: int = 1  # conf.yml NUM_RESBLOCKS
    image_channels: int = 3  # conf.yml CHANNEL_X = CHANNEL_Y
    dilations: tuple[int, ...] = (2, 4, 8, 16)  # middle block (model/DocDiff.py MiddleBlock)
    dropout: float = 0.1
    timesteps: int = 100  # T (conf.yml TIMESTEPS)
    beta_start: float = 1e-6  # before the 1000 / T scaling (schedule/schedule.py)
    beta_end: float = 0.02
    tile_size: int = 128  # training crop size; inference tiles (reference native-resolution test)
    sample_steps: int = 0  # default sampling steps of the `steps` option; 0 = all T steps

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this (one halving per level but the last)."""
        return 2 ** (len(self.channel_mults) - 1)


def preset_config(name: str) -> DocDiffConfig:
    """Paper size for the four tasks; `micro` (mixed) and `micro-TASK` are narrow versions for CPU tests and demos."""
    if name == "micro" or name.startswith("micro-"):
        # base 8, mults (1, 2, 2, 4): ~0.1M parameters a U-Net; 4 sampling steps by default.
        # "micro" trains on the four degradations mixed; "micro-TASK" on one, as the paper does.
        task = name[len("micro-"):] if name.startswith("micro-") else "mixed"
        if name != "micro" and task not in ("deblur", "denoise", "watermark", "seal"):
            raise KeyError(f"no DocDiff preset {name!r}")
        return DocDiffConfig(task=task, base_channels=8, channel_mults=(1, 2, 2, 4), sample_steps=4)
    if name in ("deblur", "denoise", "watermark", "seal"):
        return DocDiffConfig(task=name)
    raise KeyError(f"no DocDiff preset {name!r}")


def linear_betas(timesteps: int, beta_start: float = 1e-6, beta_end: float = 0.02) -> torch.Tensor:
    """The reference's linear schedule scaled by 1000 / T (schedule/schedule.py): for T = 100,
    betas run linearly from 1e-5 to 0.2."""
    scale = 1000.0 / timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)


def alphas_cumprod(timesteps: int, beta_start: float = 1e-6, beta_end: float = 0.02) -> torch.Tensor:
    """gamma_t = prod_{s <= t} (1 - beta_s), float64 for exact tables, t = 0 ... T - 1."""
    return torch.cumprod(1.0 - linear_betas(timesteps, beta_start, beta_end), dim=0)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the integer step, then Linear -> Swish -> Linear (DDPM UNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.lin1 = nn.Linear(channels // 4, channels)
        self.lin2 = nn.Linear(channels, channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 8
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10_000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        emb = torch.cat((angles.sin(), angles.cos()), dim=1)
        return self.lin2(F.silu(self.lin1(emb)))


class ResidualBlock(nn.Module):
    """Swish -> conv3x3 (+ time) -> Swish -> dropout -> conv3x3, plus a (1x1) shortcut. No norm."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int | None, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.time_emb = nn.Linear(time_channels, out_channels) if time_channels else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(x))
        if self.time_emb is not None and temb is not None:
            h = h + self.time_emb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.shortcut(x)


class Block(nn.Module):
    """One U-Net level block (the reference's DownBlock / UpBlock: a lone `res`)."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int | None, dropout: float) -> None:
        super().__init__()
        self.res = ResidualBlock(in_channels, out_channels, time_channels, dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        return self.res(x, temb)


class Resample(nn.Module):
    """Stride-2 3x3 conv (down) or ConvTranspose k4 s2 (up); keeps the channel count."""

    def __init__(self, channels: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = nn.ConvTranspose2d(channels, channels, 4, 2, 1) if up else nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        return self.conv(x)


class MiddleBlock(nn.Module):
    """ResBlock -> dilated convs (2, 4, 8, 16) -> ResBlock, at the lowest resolution (paper Sec. 3, network architecture:
    the dilated convolutions widen the receptive field instead of attention). Padding equals
    the dilation (the reference's get_pad), so any size is kept."""

    def __init__(self, channels: int, dilations: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.res1 = ResidualBlock(channels, channels, None, dropout)
        for i, d in enumerate(dilations, start=1):
            self.add_module(f"dia{i}", nn.Conv2d(channels, channels, 3, 1, padding=d, dilation=d))
        self.num_dilated = len(dilations)
        self.res2 = ResidualBlock(channels, channels, None, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1(x, None)
        for i in range(1, self.num_dilated + 1):
            x = getattr(self, f"dia{i}")(x)
        return self.res2(x, None)


class UNet(nn.Module):
    """The DocDiff U-Net (shared by CP and HRR). `timed=False` builds the CP: no time embedding.

    Skips: the projection and every down-path output (blocks and downsamplers) are stacked;
    each up-path block concatenates the next popped skip, so each level has `num_res_blocks`
    blocks at the level's width plus one more taking the finer skip (reference layout)."""

    def __init__(self, in_channels: int, config: DocDiffConfig, timed: bool) -> None:
        super().__init__()
        base, mults, dropout = config.base_channels, config.channel_mults, config.dropout
        time_channels = base * 4 if timed else None
        self.image_proj = nn.Conv2d(in_channels, base, 3, padding=1)
        self.time_emb = TimeEmbedding(base * 4) if timed else None

        down: list[nn.Module] = []
        channels = base
        for i, mult in enumerate(mults):
            for _ in range(config.num_res_blocks):
                down.append(Block(channels, base * mult, time_channels, dropout))
                channels = base * mult
            if i < len(mults) - 1:
                down.append(Resample(channels, up=False))
        self.down = nn.ModuleList(down)
        self.middle = MiddleBlock(channels, tuple(config.dilations), dropout)

        up: list[nn.Module] = []
        for i in reversed(range(len(mults))):
            out = base * mults[i]
            for _ in range(config.num_res_blocks):
                up.append(Block(channels + out, out, time_channels, dropout))
                channels = out
            finer = base * (mults[i - 1] if i > 0 else 1)
            up.append(Block(finer + out, out, time_channels, dropout))
            if i > 0:
                up.append(Resample(out, up=True))
        self.up = nn.ModuleList(up)
        self.final = nn.Conv2d(channels, config.image_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_emb(t) if self.time_emb is not None and t is not None else None
        x = self.image_proj(x)
        skips = [x]
        for module in self.down:
            x = module(x, temb)
            skips.append(x)
        x = self.middle(x)
        for module in self.up:
            if isinstance(module, Resample):
                x = module(x, temb)
            else:
                x = module(torch.cat((x, skips.pop()), dim=1), temb)
        return self.final(F.silu(x))


class DocDiff(nn.Module):
    """CP + HRR with the diffusion tables as non-persistent buffers (rebuilt from the config,
    so official state dicts, which hold none, load as they are)."""

    def __init__(self, config: DocDiffConfig) -> None:
        super().__init__()
        self.config = config
        self.init_predictor = UNet(config.image_channels, config, timed=False)
        self.denoiser = UNet(2 * config.image_channels, config, timed=True)
        gammas = alphas_cumprod(config.timesteps, config.beta_start, config.beta_end)
        # gamma at index t + 1, with gamma_{-1} = 1: the "previous step" of t = 0 is the clean end.
        self.register_buffer("gammas_ext", torch.cat([torch.ones(1, dtype=torch.float64), gammas]).float(), persistent=False)

    def coarse(self, degraded: torch.Tensor) -> torch.Tensor:
        """CP(x): the coarse, low-frequency restoration (paper Sec. 3, "Coarse Predictor")."""
        return self.init_predictor(degraded)

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma_t (alpha-bar) for integer t in [-1, T - 1], shaped (B, 1, 1, 1)."""
        return self.gammas_ext[(t + 1).long()].view(-1, 1, 1, 1)

    def q_sample(self, residual: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward diffusion of the residual: sqrt(gamma_t) r + sqrt(1 - gamma_t) eps (residual diffusion, paper Sec. 3)."""
        g = self.gamma(t)
        return g.sqrt() * residual + (1.0 - g).sqrt() * noise

    def predict_residual(self, noisy: torch.Tensor, coarse: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """HRR: r_0 predicted from the noisy residual, conditioned on CP(x) by concatenation."""
        return self.denoiser(torch.cat((noisy, coarse), dim=1), t)

    def ddim_step(self, noisy: torch.Tensor, coarse: torch.Tensor, t: torch.Tensor,
                  t_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One deterministic reverse step t -> t_prev (DDIM, eta = 0; reference
        schedule/diffusionSample.py with PRE_ORI): r_0 = HRR(r_t, CP, t),
        eps = (r_t - sqrt(g_t) r_0) / sqrt(1 - g_t), r_prev = sqrt(g_prev) r_0 + sqrt(1 - g_prev) eps.
        t_prev = -1 ends the chain (g = 1): r_prev = r_0. Returns (r_prev, r_0)."""
        r0 = self.predict_residual(noisy, coarse, t)
        g, g_prev = self.gamma(t), self.gamma(t_prev)
        eps = (noisy - g.sqrt() * r0) / (1.0 - g).sqrt()
        return g_prev.sqrt() * r0 + (1.0 - g_prev).sqrt() * eps, r0


class CoarseGraph(nn.Module):
    """Exportable CP graph: degraded image -> coarse prediction."""

    def __init__(self, model: DocDiff) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.coarse(image)


class RefineStepGraph(nn.Module):
    """Exportable HRR step: (noisy residual, CP output, t, t_prev) -> (next residual, r_0)."""

    def __init__(self, model: DocDiff) -> None:
        super().__init__()
        self.model = model

    def forward(self, noisy: torch.Tensor, coarse: torch.Tensor, timestep: torch.Tensor,
                prev_timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.ddim_step(noisy, coarse, timestep, prev_timestep)


def sampling_timesteps(timesteps: int, steps: int) -> list[tuple[int, int]]:
    """(t, t_prev) pairs of the sampler. steps >= T: every step T-1 ... 0, the reference's
    sampler; fewer: evenly spaced t (the faster DDIM jump-step sampler), always ending at 0 -> -1."""
    steps = max(1, min(int(steps), timesteps))
    if steps == timesteps:
        ts = list(range(timesteps - 1, -1, -1))
    else:
        ts = sorted({int(round(v)) for v in torch.linspace(timesteps - 1, 0, steps).tolist()}, reverse=True)
    return list(zip(ts, ts[1:] + [-1]))


@torch.no_grad()
def sample(model: DocDiff, degraded: torch.Tensor, steps: int | None = None,
           noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Full restoration in plain PyTorch (training evaluation and benchmarks; the pipeline runs
    the same loop over its graphs): returns (CP + r_0, CP). `noise` is r_T (default N(0, 1))."""
    coarse = model.coarse(degraded)
    r = torch.randn_like(coarse) if noise is None else noise
    for t, t_prev in sampling_timesteps(model.config.timesteps, steps or model.config.timesteps):
        tt = torch.full((len(r),), t, dtype=torch.long, device=r.device)
        r, _ = model.ddim_step(r, coarse, tt, torch.full_like(tt, t_prev))
    return coarse + r, coarse
