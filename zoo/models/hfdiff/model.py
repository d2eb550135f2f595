"""The networks of HF-Diff: ResShift's Swin-UNet (`UNetModelSwin`), the latent codecs, and the model
that holds them.

`SwinUNet` is our implementation of ResShift's `UNetModelSwin` (zsyOAOA/ResShift `models/unet.py`
and `models/swin_transformer.py`, the first-release version SinSR and HF-Diff build on: the LQ image
is concatenated to the latent, `in_channels` counts both). Module names follow the official ones
(`input_blocks.N.M...`, `middle_block`, `output_blocks`, `out`, `time_embed`), so official checkpoints
load through a short key map (convert.py). Structure (ResShift paper Sec. 4, Fig. 2 and the config):
ADM-style residual blocks with scale-shift time conditioning; at the levels listed in
`attention_resolutions` the first residual block of a level is followed by a Swin layer
(1x1 patch embedding to `swin_embed_dim`, `swin_depth` blocks of (shifted) window attention with
GroupNorm and a 1x1-conv MLP, 1x1 projection back); the middle block is ResBlock-Swin-ResBlock.

Paper size (configs/HF-Diff.yaml = SinSR/ResShift realsr_swinunet_realesrgan256): model_channels 160,
channel_mult 1-2-2-4, 2 residual blocks a level, attention at 64/32/16/8 (all four levels of a 64x64
latent), Swin depth 2, embed 192, window 8, 6 heads (192 / 32 head channels), MLP ratio 4:
118,593,583 parameters (counted on the meta device from the official classes; see __init__.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.diffusion.resshift import ResShiftSchedule

from .invertible import InvertibleConfig, InvertibleNet

# --------------------------------------------------------------------------- Swin-UNet


@dataclass
class SwinUNetConfig:
    """`UNetModelSwin`'s arguments (the official names). `image_size` is the latent size the
    network is built for (the Swin layers' window and shift depend on it, as in the official code)."""

    image_size: int = 64
    latent_channels: int = 3  # out_channels; in_channels = latent_channels + lq_channels
    lq_channels: int = 3
    model_channels: int = 160
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4.0
    num_head_channels: int = 32
    norm_groups: int = 32  # GroupNorm32 in the official code
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        self.num_res_blocks = tuple(self.num_res_blocks)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if len(self.num_res_blocks) != len(self.channel_mult):
            raise ValueError("num_res_blocks needs one entry per channel_mult level")

    @property
    def multiple(self) -> int:
        """Latent sizes must be multiples of this (the levels' stride-2 steps times the window)."""
        return 2 ** (len(self.channel_mult) - 1) * self.window_size


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos, sin] of the (0-based) timestep indices (ADM / official basic_ops)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """ADM residual block with scale-shift norm: h = conv(SiLU(GN(x))); h = GN(h)(1 + s) + b; conv."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        last = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        for p in last.parameters():  # zero_module, as ADM
            nn.init.zeros_(p)
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(dropout), last)
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        for layer in self.out_layers[1:]:
            h = layer(h)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _windows(x: Tensor, ws: int) -> Tensor:
    """(B, C, H, W) -> (B * nW, ws * ws, C)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, ws * ws, c)


def _unwindows(x: Tensor, ws: int, b: int, h: int, w: int) -> Tensor:
    """(B * nW, ws * ws, C) -> (B, C, H, W)."""
    c = x.shape[-1]
    x = x.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


def shift_mask(h: int, w: int, ws: int, shift: int) -> Tensor:
    """(nW, ws^2, ws^2) additive mask of shifted-window attention: -100 between tokens from
    different regions of the cyclically shifted map (Swin, Liu et al. 2021, Sec. 3.2)."""
    region = torch.zeros(1, 1, h, w)
    count = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            region[:, :, hs, wsl] = count
            count += 1
    ids = _windows(region, ws)[..., 0]  # (nW, ws^2)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    relative_position_index: Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)].reshape(n, n, -1)
        attn = attn + bias.permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(attn)
            attn = attn.reshape(bw, self.num_heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (GroupNorm) window attention and MLP on (B, C, H, W) maps; shifted when `shift` > 0.
    As the official block: a map no larger than the window is one window, unshifted."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float, groups: int) -> None:
        super().__init__()
        if resolution <= window_size:
            window_size, shift = resolution, 0
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.GroupNorm(groups, dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.GroupNorm(groups, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._masks: dict[tuple[int, int], Tensor] = {}

    def _mask(self, h: int, w: int) -> Tensor | None:
        if self.shift == 0:
            return None
        if (h, w) not in self._masks:
            self._masks[(h, w)] = shift_mask(h, w, self.window_size, self.shift)
        return self._masks[(h, w)]

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ws, s = self.window_size, self.shift
        y = self.norm1(x)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(2, 3))
        mask = self._mask(h, w)
        y = _unwindows(self.attn(_windows(y, ws), None if mask is None else mask.to(x.device)), ws, b, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchProj(nn.Module):
    """The official PatchEmbed / PatchUnEmbed with patch size 1 and no patch norm: a 1x1 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """The official `BasicLayer`: embed to swin_embed_dim, `depth` blocks (odd ones shifted by ws/2), project back."""

    def __init__(self, channels: int, resolution: int, cfg: SwinUNetConfig) -> None:
        super().__init__()
        dim = cfg.swin_embed_dim
        self.patch_embed = PatchProj(channels, dim)
        self.blocks = nn.ModuleList([
            SwinBlock(dim, resolution, dim // cfg.num_head_channels, cfg.window_size, 0 if i % 2 == 0 else cfg.window_size // 2,
                      cfg.mlp_ratio, cfg.norm_groups)
            for i in range(cfg.swin_depth)])
        self.patch_unembed = PatchProj(dim, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)


class TimestepSequential(nn.Sequential):
    """Passes the time embedding to the residual blocks it holds."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class SwinUNet(nn.Module):
    """f(x_t ‖ lq, t) -> x0 (ResShift's x_start prediction). x: (B, latent, h, w) already scaled by the
    schedule; lq: (B, 3, h, w) in [-1, 1] at the latent resolution (x4 SR with an f4 codec); t: (B,) int."""

    def __init__(self, cfg: SwinUNetConfig) -> None:
        super().__init__()
        self.config = cfg
        mc, groups, drop = cfg.model_channels, cfg.norm_groups, cfg.dropout
        emb = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.latent_channels + cfg.lq_channels, ch, 3, padding=1))])
        skips, ds = [ch], cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, emb, mult * mc, groups, drop)]
                ch = mult * mc
                if ds in cfg.attention_resolutions and j == 0:
                    layers.append(SwinLayer(ch, ds, cfg))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skips.append(ch)
                ds //= 2
        self.middle_block = TimestepSequential(ResBlock(ch, emb, ch, groups, drop), SwinLayer(ch, ds, cfg), ResBlock(ch, emb, ch, groups, drop))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mc * mult, groups, drop)]
                ch = mc * mult
                if ds in cfg.attention_resolutions and i == 0:
                    layers.append(SwinLayer(ch, ds, cfg))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds *= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, cfg.latent_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        h = torch.cat([x, lq.to(x.dtype)], dim=1)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


# --------------------------------------------------------------------------- codecs


@dataclass
class VQConfig:
    """ResShift's VQGAN f4 (`ldm.models.autoencoder.VQModelTorch`, configs' `autoencoder.params`):
    ch 128, ch_mult 1-2-4, 2 res blocks, no attention resolutions (LDM's mid-block attention only),
    z 3 channels, codebook 8192 x 3. Built as diffusers' `VQModel` with the same layers
    (55,322,782 parameters, equal to the official class counted on the meta device)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    latent_channels: int = 3
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)


def build_vq(cfg: VQConfig) -> Any:
    from diffusers import VQModel

    n = len(cfg.block_out_channels)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.block_out_channels,
                   layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                   num_vq_embeddings=cfg.num_vq_embeddings, vq_embed_dim=cfg.latent_channels,
                   norm_num_groups=cfg.norm_num_groups, sample_size=256)


class VQCodec(nn.Module):
    """ResShift's latent interface over the VQGAN: encode = encoder + quant_conv (no quantisation,
    scale_factor 1.0), decode = quantise + post_quant_conv + decoder; images in [0, 1] here
    ([-1, 1] inside, as the official model sees them)."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.vq: Any = build_vq(cfg)
        self.latent_channels = cfg.latent_channels

    def encode(self, images: Tensor) -> Tensor:
        return self.vq.encode(images * 2 - 1).latents

    def decode(self, latents: Tensor) -> Tensor:
        return (self.vq.decode(latents).sample + 1) / 2


def build_codec(kind: str, autoencoder: Any) -> Any:
    """"kl": the spine's `LatentCodec` (autoencoder-kl config); "vq": ResShift's VQGAN f4."""
    if kind == "kl":
        from zoo.diffusion.autoencoder import AutoencoderConfig, LatentCodec

        cfg = autoencoder if isinstance(autoencoder, AutoencoderConfig) else AutoencoderConfig.from_dict(autoencoder)
        return LatentCodec.from_config(cfg)
    if kind == "vq":
        return VQCodec(autoencoder if isinstance(autoencoder, VQConfig) else VQConfig(**autoencoder))
    raise ValueError(f"autoencoder kind must be 'kl' or 'vq', got {kind!r}")


# --------------------------------------------------------------------------- the model


@dataclass
class HFDiffConfig:
    """A variant: the Swin-UNet (student and teacher share it), the codec, the ResShift schedule
    (released SR defaults), the INN of the high-frequency loss and the tiling of `predict`."""

    unet: SwinUNetConfig = field(default_factory=SwinUNetConfig)
    autoencoder_kind: str = "vq"  # "vq" (ResShift's VQGAN f4) | "kl" (the spine's autoencoder-kl)
    autoencoder_variant: str = ""  # kl: the autoencoder-kl variant whose bundled weights training loads
    autoencoder: Any = None  # VQConfig or AutoencoderConfig (None: the preset of the kind / variant)
    inn: InvertibleConfig = field(default_factory=InvertibleConfig)
    scale: int = 4
    steps: int = 15
    kappa: float = 2.0
    min_noise: float = 0.04
    etas_end: float = 0.99
    power: float = 0.3
    tile: int = 0  # LR tile size of `predict` (0: unet.image_size, the latent = LR resolution)
    overlap: int = 0  # LR pixels two tiles share (0: a quarter of the tile)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = SwinUNetConfig(**self.unet)
        if isinstance(self.inn, dict):
            self.inn = InvertibleConfig(**self.inn)
        if self.autoencoder_kind == "vq":
            if self.autoencoder is None or isinstance(self.autoencoder, dict):
                self.autoencoder = VQConfig(**(self.autoencoder or {}))
        else:
            from zoo.diffusion.autoencoder import AutoencoderConfig
            from zoo.diffusion.autoencoder import preset_config as ae_preset

            if self.autoencoder is None:
                self.autoencoder = ae_preset(self.autoencoder_variant or "micro-f4")
            elif isinstance(self.autoencoder, dict):
                self.autoencoder = AutoencoderConfig.from_dict(self.autoencoder)
        channels = self.autoencoder.latent_channels
        if channels != self.unet.latent_channels or channels != self.inn.channels:
            raise ValueError(f"latent channels differ: codec {channels}, unet {self.unet.latent_channels}, inn {self.inn.channels}")
        if self.tile % self.unet.multiple or self.tile_size % self.unet.multiple:
            raise ValueError(f"tile {self.tile_size} must be a multiple of {self.unet.multiple}")

    @property
    def tile_size(self) -> int:
        return self.tile or self.unet.image_size

    @property
    def tile_overlap(self) -> int:
        return self.overlap or self.tile_size // 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HFDiffModel(nn.Module):
    """What a weights file holds: `unet` (the one-step student, HF-Diff), `teacher` (the 15-step
    ResShift model it was distilled from), `codec` (frozen), `inn` (the invertible network of the
    high-frequency loss; training only). `ready` flags which parts hold trained weights
    (codec, inn, teacher, student), so each `zoo train` stage knows what to load or initialise."""

    def __init__(self, config: HFDiffConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = SwinUNet(config.unet)
        self.teacher = SwinUNet(config.unet)
        self.codec: Any = build_codec(config.autoencoder_kind, config.autoencoder)
        self.codec.requires_grad_(False)
        self.inn = InvertibleNet(config.inn)
        self.schedule = ResShiftSchedule(config.steps, config.kappa, config.min_noise, config.etas_end, config.power)
        self.register_buffer("ready", torch.zeros(4, dtype=torch.bool))  # codec, inn, teacher, student

    READY = ("codec", "inn", "teacher", "student")
    ready: Tensor

    def is_ready(self, part: str) -> bool:
        return bool(self.ready[self.READY.index(part)])

    def mark_ready(self, part: str) -> None:
        with torch.no_grad():
            self.ready[self.READY.index(part)] = True

    # -- latent helpers (training and graphs) ----------------------------------------------
    def lq_condition(self, lr: Tensor) -> Tensor:
        """The network's LQ input: the LR image in [-1, 1] (latent resolution)."""
        return lr * 2 - 1

    def encode_lr(self, lr: Tensor) -> Tensor:
        """y0: the latent of the bicubic x4 upsampled LR image (official `encode_first_stage(up_sample=True)`)."""
        up = F.interpolate(lr, scale_factor=float(self.config.scale), mode="bicubic", align_corners=False)
        return self.codec.encode(up)

    def predict_x0(self, net: nn.Module, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        """f(scale_input(x_t), t, lq): one network call, x_start prediction."""
        return net(self.schedule.scale_input(x, t), t, lq)


class SRGraph(nn.Module):
    """LR (B, 3, h, w) in [0, 1] and noise (B, c, h, w) -> SR (B, 3, 4h, 4w): encode the bicubic-upsampled
    LR, x_T = y0 + kappa sqrt(eta_T) noise, one student call at t = T-1, decode."""

    def __init__(self, model: HFDiffModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor, noise: Tensor) -> Tensor:
        m = self.model
        y0 = m.encode_lr(lr)
        x = m.schedule.prior_sample(y0, noise)
        t = torch.full((lr.shape[0],), m.config.steps - 1, dtype=torch.int64, device=lr.device)
        return m.codec.decode(m.predict_x0(m.unet, x, t, m.lq_condition(lr)))


class TeacherStepGraph(nn.Module):
    """One ResShift ancestral step of the teacher: (x_t, LR, t, noise) -> (x_{t-1}, x0 estimate)."""

    def __init__(self, model: HFDiffModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents: Tensor, lr: Tensor, timestep: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        x0 = m.predict_x0(m.teacher, latents, timestep, m.lq_condition(lr))
        return m.schedule.ancestral_step(x0, latents, timestep, noise), x0


class EncodeLRGraph(nn.Module):
    """LR -> y0 (the bicubic-upsampled LR's latent), where the teacher's chain starts."""

    def __init__(self, model: HFDiffModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> Tensor:
        return self.model.encode_lr(lr)


class DecodeGraph(nn.Module):
    def __init__(self, model: HFDiffModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents: Tensor) -> Tensor:
        return self.model.codec.decode(latents)


def count_parameters(module_fn: Any) -> int:
    with torch.device("meta"):
        module = module_fn()
    return sum(p.numel() for p in module.parameters())
